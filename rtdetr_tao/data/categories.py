"""Category ids ↔ contiguous training labels.

COCO files use category ids of any kind (one-based, non-contiguous, COCO's 91-id scheme). ``dataset.num_classes``
may be given in either of two conventions, and both work:

* the number of categories C: labels ``0..C-1`` are the categories sorted by id;
* TAO's ``max category id + 1``: the label *is* the category id (unused ids are classes that never occur).

Any other value is an error that names the two that would work. Every output maps labels back to the ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config.dataset import DatasetSpec
from ..errors import DataError, SpecError
from .sources import resolve_file


@dataclass(frozen=True)
class CategoryMap:
    """``label_to_category[label]`` is the original id of training label ``label``; names in label order.
    ``category_ids``: the ids the annotation files define (under TAO's convention some labels are unused ids);
    None (maps saved before it was recorded): every label's id."""

    label_to_category: tuple[int, ...]
    category_names: tuple[str, ...]
    category_ids: tuple[int, ...] | None = None

    @property
    def defined_ids(self) -> tuple[int, ...]:
        """The category ids of the annotations, sorted."""
        return tuple(sorted(self.category_ids if self.category_ids is not None else self.label_to_category))

    @property
    def num_classes(self) -> int:
        return len(self.label_to_category)

    @property
    def category_to_label(self) -> dict[int, int]:
        return {category: label for label, category in enumerate(self.label_to_category)}

    @property
    def names_by_category(self) -> dict[int, str]:
        return dict(zip(self.label_to_category, self.category_names, strict=True))

    def to_dict(self) -> dict[str, list]:
        """Plain lists, for checkpoints and metadata."""
        return {
            "label_to_category": list(self.label_to_category),
            "category_names": list(self.category_names),
            "category_ids": list(self.defined_ids),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoryMap:
        ids = data.get("category_ids")
        return cls(
            tuple(int(c) for c in data["label_to_category"]),
            tuple(str(n) for n in data["category_names"]),
            None if ids is None else tuple(int(c) for c in ids),
        )


def read_categories(json_file: str, cache_dir: str | None = None) -> dict[int, str]:
    """``{category id: name}`` of a COCO annotation file."""
    path = resolve_file(json_file, cache_dir)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{json_file} is not a valid COCO annotation file ({type(exc).__name__}: {exc})") from None


def category_map(categories: Mapping[int, str], num_classes: int, *, source: str = "the annotations") -> CategoryMap:
    """The mapping for ``categories`` (id → name) under ``num_classes`` (either convention, see module doc)."""
    if not categories:
        raise DataError(f"{source} define no categories")
    ids = sorted(categories)
    if min(ids) < 0:
        raise DataError(f"{source}: category ids must be >= 0, found {min(ids)}")
    count, max_plus_one = len(ids), ids[-1] + 1
    if num_classes == count:
        return CategoryMap(tuple(ids), tuple(categories[i] for i in ids), tuple(ids))
    if num_classes == max_plus_one:
        names = tuple(categories.get(i, f"class_{i}") for i in range(num_classes))
        return CategoryMap(tuple(range(num_classes)), names, tuple(ids))
    raise DataError(
        f"dataset.num_classes={num_classes} does not fit {source}: {count} categories with ids {ids[0]}..{ids[-1]}; "
        f"use dataset.num_classes={count} (labels 0..{count - 1}) or {max_plus_one} (TAO's max category id + 1)"
    )


def category_map_from_sources(dataset_spec: DatasetSpec, sources: Iterable[Any]) -> CategoryMap:
    """The mapping of the categories of all ``sources`` (their union) under ``dataset_spec.num_classes``."""
    merged: dict[int, str] = {}
    files = []
    for source in sources:
        files.append(source.json_file)
        for cid, name in read_categories(source.json_file, dataset_spec.cache_dir).items():
            if merged.setdefault(cid, name) != name:
                raise DataError(
                    f"category id {cid} is '{merged[cid]}' in one annotation file and '{name}' in {source.json_file}"
                )
    if not files:
        raise DataError("no annotation files given; set dataset.train_data_sources")
    return category_map(merged, dataset_spec.num_classes, source=", ".join(files))


def model_category_map(
    dataset_spec: DatasetSpec, recorded: Mapping[str, Any] | None, *, model: str = "the model"
) -> CategoryMap:
    """The label ↔ category-id mapping of a model, for every job (train, resume, evaluate, inference, export,
    quantize), from the first of:

    1. ``recorded``: the mapping a checkpoint of ours stores. The head was trained on those labels, whatever the
       spec's annotation files say now.
    2. ``dataset.train_data_sources``, all of them (their union): the labels a model trained on this spec's data
       has, exactly as training builds them. A checkpoint that records nothing (official RT-DETRv2 or Hugging
       Face weights) therefore maps the same way as ours trained on the same files. The evaluated split may list
       fewer categories than the training files; taking it first would shift every label under the
       ``num_classes = C`` convention.
    3. ``dataset.test_data_sources``, then ``dataset.val_data_sources``: when the spec names no training data
       (TAO's evaluate and inference specs).

    ``model`` names the model in the error raised when none of these is there."""
    if recorded:
        return CategoryMap.from_dict(recorded)
    sources = list(dataset_spec.train_data_sources or [])
    if not sources:
        split = dataset_spec.test_data_sources or dataset_spec.val_data_sources
        sources = [split] if split is not None else []
    if not sources:
        raise SpecError(
            f"{model} does not record its classes; give dataset.train_data_sources or dataset.test_data_sources so "
            "the labels can be mapped to category ids"
        )
    return category_map_from_sources(dataset_spec, sources)
