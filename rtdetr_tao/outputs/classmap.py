"""The class-name file of ``rtdetr inference`` and ``rtdetr-deploy inference`` (local or ``s3://``).

One function for both, so the two can never disagree (TAO's TensorRT path read it shifted by one). Two layouts
are accepted, whichever class-count convention the model was trained under:

* one name per category of the annotations, in category-id order (line 1 names the smallest id);
* TAO's ``max category id + 1`` lines: line ``i + 1`` names category id ``i``; lines of ids the annotations do
  not define may hold anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..data.sources import resolve_file
from ..errors import DataError


def read_classmap(
    path: str | Path,
    *,
    label_to_category: Sequence[int] | None = None,
    category_ids: Sequence[int] | None = None,
    default_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    cache_dir: str | None = None,
) -> list[str]:
    """Class names in label order.

    Args:
        label_to_category: the category id of each label (None: label ``i`` is id ``i``, ``num_classes`` labels).
        category_ids: the ids the annotations define (None: those of ``label_to_category``).
        default_names: names of labels whose id the annotations do not define (TAO's unused ids).
        num_classes: without ``label_to_category``, the number of labels (None: as many as the file names).

    Names are stripped of surrounding whitespace; blank lines at the end are ignored.

    Raises:
        DataError: the file is missing or unreadable, holds no names, has an empty or repeated name where a
            category is named, or its length is neither of the two accepted ones.
    """
    lines = _lines(path, cache_dir)
    if label_to_category is None:
        label_to_category = range(len(lines) if num_classes is None else num_classes)
    ids = sorted(set(category_ids if category_ids is not None else label_to_category))
    count, max_plus_one = len(ids), ids[-1] + 1 if ids else 0
    if len(lines) == count:
        line_of = {cid: number for number, cid in enumerate(ids)}
    elif len(lines) == max_plus_one:
        line_of = {cid: cid for cid in ids}
    else:
        raise DataError(
            f"classmap {path} lists {len(lines)} names but the model predicts {count} categories (ids "
            f"{ids[0]}..{ids[-1]}); write {count} lines (one name per category, in id order) or {max_plus_one} "
            "lines (TAO's: line i + 1 names category id i)"
        )
    first_seen: dict[str, int] = {}
    for cid in ids:
        number, name = line_of[cid] + 1, lines[line_of[cid]]
        if not name:
            raise DataError(
                f"classmap {path}, line {number}: empty class name for category id {cid}; line 1 names the first "
                "category, and so on"
            )
        if name in first_seen:
            raise DataError(
                f"classmap {path}, line {number}: {name!r} repeats line {first_seen[name]}; names must differ"
            )
        first_seen[name] = number
    return [
        lines[line_of[cid]] if cid in line_of else (default_names[label] if default_names else f"class_{cid}")
        for label, cid in enumerate(label_to_category)
    ]


def _lines(path: str | Path, cache_dir: str | None) -> list[str]:
    try:
        local = resolve_file(str(path), cache_dir)
        text = local.read_text(encoding="utf-8-sig")
    except DataError as error:
        if str(path).startswith("s3://"):
            raise
        raise DataError(
            f"classmap {path} does not exist; set dataset.infer_data_sources.classmap to a text file with one "
            "class name per line"
        ) from error
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"classmap {path} is not a readable UTF-8 text file ({exc})") from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DataError(f"classmap {path} is empty; write one class name per line, in label order")
    return names
