"""Fuzzing (hypothesis): the spec loader, the COCO parser and the image loader never fail with anything but one of
our one-line errors, whatever the input. ``--hypothesis-show-statistics`` prints how many examples ran;
``RTDETR_FUZZ_EXAMPLES`` (default 150 per test) runs more."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from rtdetr_tao.config import ExperimentSpec
from rtdetr_tao.config.loader import load_spec
from rtdetr_tao.errors import RTDETRError

FUZZ = settings(
    max_examples=int(os.environ.get("RTDETR_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _one_line(error: RTDETRError) -> None:
    assert str(error) and "\n" not in str(error), repr(error)


# --- spec loader ----------------------------------------------------------------------------------------------------


def _dotted_keys(model: Any, prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        keys.append(prefix + name)
        if isinstance(info.annotation, type) and hasattr(info.annotation, "model_fields"):
            keys += _dotted_keys(info.annotation, f"{prefix}{name}.")
    return keys


KEYS = _dotted_keys(ExperimentSpec)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["???", "${train.num_epochs}", "${model}", "${nope.key}", "${a", "inf", "-1", "[", "{x: 1}"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _override(key: str, value: Any) -> str:
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} → {"a": {"b": 1}} (a value already standing where a section should go is kept)."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.setdefault(part, {}), dict):
                break
            node = node[part]
        else:
            node[leaf] = value
    return out


overrides = st.lists(
    st.one_of(
        st.builds(_override, st.sampled_from(KEYS), values),
        st.text(max_size=40),
        st.sampled_from(KEYS).map(lambda k: f"~{k}"),
    ),
    max_size=4,
)
documents = st.one_of(
    st.text(max_size=300),  # raw text: mostly invalid YAML
    st.dictionaries(st.sampled_from(KEYS), values, max_size=6).map(_nest).map(yaml.safe_dump),
)


@FUZZ
@given(text=documents, items=overrides, action=st.sampled_from([None, "train", "evaluate", "export"]))
def test_spec_loader_fuzz(tmp_path_factory, text: str, items: list[str], action: str | None) -> None:
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    try:
        load_spec(path, items, action=action)
    except RTDETRError as error:
        _one_line(error)


# --- COCO parser ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco_split(tmp_path_factory):
    from rtdetr_tao.data.synthetic import write_split

    return write_split(tmp_path_factory.mktemp("fuzzcoco") / "train", 4, size=(32, 32), seed=0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a JSON tree."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _mutate(data: Any, path: tuple, how: str, value: Any) -> Any:
    """``data`` with the node at ``path`` replaced by ``value``, deleted, or (in a list) appended a second time."""
    if not path:
        return value if how == "replace" else data
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    leaf = path[-1]
    if how == "replace":
        parent[leaf] = value
    elif how == "delete":
        del parent[leaf]
    elif isinstance(parent, list):
        parent.append(json.loads(json.dumps(parent[leaf])))
    return data


@FUZZ
@given(data=st.data(), mutations=st.integers(1, 3))
def test_coco_parser_fuzz(coco_split, tmp_path_factory, data, mutations: int) -> None:
    from rtdetr_tao.config.dataset import DatasetSpec
    from rtdetr_tao.data.categories import category_map_from_sources
    from rtdetr_tao.data.coco import CocoDetection

    coco = json.loads(coco_split.json_file.read_text())
    for _ in range(mutations):
        path = data.draw(st.sampled_from(_paths(coco)))
        how = data.draw(st.sampled_from(["replace", "delete", "duplicate"]))
        coco = _mutate(coco, path, how, data.draw(json_values))
    folder = tmp_path_factory.mktemp("mutated")
    (folder / "annotations.json").write_text(json.dumps(coco))
    source = {"image_dir": str(coco_split.image_dir), "json_file": str(folder / "annotations.json")}
    spec = DatasetSpec.model_validate(
        {"train_data_sources": [source], "num_classes": 4, "workers": 0, "cache_dir": str(folder / "cache")}
    )
    try:
        cmap = category_map_from_sources(spec, spec.train_data_sources)
        dataset = CocoDetection(spec.train_data_sources[0], cmap, eval_size=(32, 32))
        for index in range(min(len(dataset), 2)):
            dataset[index]
    except RTDETRError as error:
        _one_line(error)


# --- image loader ---------------------------------------------------------------------------------------------------


def _encoded(fmt: str, mode: str) -> bytes:
    array = np.random.default_rng(0).integers(0, 255, (24, 20, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


ENCODED = [
    _encoded(fmt, mode)
    for fmt, mode in [("PNG", "RGB"), ("PNG", "P"), ("PNG", "I;16"), ("JPEG", "RGB"), ("BMP", "RGB"),
                      ("TIFF", "RGB"), ("WEBP", "RGB"), ("GIF", "P")]
]  # fmt: skip


def _truncated(blob: bytes, fraction: float) -> bytes:
    return blob[: int(len(blob) * fraction)]


def _corrupted(blob: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(blob)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out)


@FUZZ
@given(
    blob=st.one_of(
        st.binary(max_size=2000),
        st.builds(_truncated, st.sampled_from(ENCODED), st.floats(0, 1)),
        st.builds(
            _corrupted,
            st.sampled_from(ENCODED),
            st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
        ),
    )
)
def test_image_loader_fuzz(tmp_path_factory, blob: bytes) -> None:
    from rtdetr_tao.data.preprocess import load_rgb

    path = tmp_path_factory.mktemp("img") / "image.png"
    path.write_bytes(blob)
    try:
        image = load_rgb(path)
    except RTDETRError as error:
        _one_line(error)
    else:
        assert image.mode == "RGB" and min(image.size) > 0
