"""Every spec key that names a file or folder is declared once (``spec_field(path=...)``) and accepts ``s3://``:
a walk over every action's JSON schema finds the keys, and each one is resolved against a loopback S3 server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from layouts import moto_server
from pydantic import ValidationError

from rtdetr_tao.commands import SPEC_ACTIONS
from rtdetr_tao.config import ExperimentSpec
from rtdetr_tao.config.experiment import get_path
from rtdetr_tao.config.paths import path_keys
from rtdetr_tao.config.schema import action_schema
from rtdetr_tao.data.localize import localize
from rtdetr_tao.data.sources import resolve_image_dir
from rtdetr_tao.errors import DataError, SpecError

PATH_LIKE = re.compile(r"(_path|_file|_dir|_engine|_cache|checkpoint|classmap|storage)$")
NOT_A_PATH = {"automl.storage": "an Optuna database URL (sqlite:///…, postgresql://…), not a file"}
DECLARED = dict(path_keys(ExperimentSpec))


@pytest.fixture(scope="module")
def s3_keys() -> Iterator[None]:
    """One loopback S3 server with a bucket ``keys`` for the whole module."""
    with moto_server():
        boto3.client("s3").create_bucket(Bucket="keys")
        yield


def _is_text(prop: dict[str, Any]) -> bool:
    """A string (or a list of strings), possibly nullable."""
    branches = [prop, *prop.get("anyOf", []), *prop.get("oneOf", [])]
    types = {t for b in branches for t in (b.get("type") if isinstance(b.get("type"), list) else [b.get("type")])}
    items = [b["items"] for b in branches if isinstance(b.get("items"), dict)]
    return "string" in types or any(_is_text(i) for i in items)


def _schema_keys(node: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted keys of every text-valued property below ``node`` (list sections: their items' keys)."""
    keys = set()
    for branch in [*node.get("anyOf", []), *node.get("oneOf", [])]:
        keys |= _schema_keys(branch, prefix)
    if isinstance(node.get("items"), dict):
        keys |= _schema_keys(node["items"], prefix)
    for name, prop in node.get("properties", {}).items():
        if _is_text(prop):
            keys.add(f"{prefix}{name}")
        keys |= _schema_keys(prop, f"{prefix}{name}.")
    return keys


def test_every_path_like_key_of_every_action_schema_is_declared() -> None:
    seen: set[str] = set()
    for action in SPEC_ACTIONS:
        seen |= {k for k in _schema_keys(action_schema(action)) if PATH_LIKE.search(k)}
    undeclared = sorted(seen - set(DECLARED) - set(NOT_A_PATH))
    assert not undeclared, f"declare these with spec_field(path=...): {undeclared}"
    assert set(DECLARED) <= seen | {k for k in DECLARED if not PATH_LIKE.search(k)}
    named = {"train.pretrained_model_path", "evaluate.checkpoint", "gen_trt_engine.tensorrt.calibration.cal_cache_file"}
    assert named | {"distill.pretrained_teacher_model_path", "dataset.infer_data_sources.classmap"} <= set(DECLARED)


def _spec_with(dotted: str, value: Any) -> ExperimentSpec:
    """A valid spec with ``dotted`` (list sections: their first item) set to ``value``."""
    source = {"image_dir": "local/images", "json_file": "local/a.json"}
    data: dict[str, Any] = {
        "dataset": {
            "train_data_sources": [dict(source)],
            "val_data_sources": dict(source),
            "test_data_sources": dict(source),
            "infer_data_sources": {"image_dir": ["local/images"]},
            "quant_calibration_data_sources": {"image_dir": "local/images"},
        },
        "distill": {"teacher": {}},
    }
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if isinstance(node, list):
            node = node[0]
    node[parts[-1]] = value
    return ExperimentSpec.model_validate(data)


def _value(spec: ExperimentSpec, dotted: str) -> Any:
    _, _, rest = dotted.partition(".train_data_sources.")
    if rest:
        return getattr(spec.dataset.train_data_sources[0], rest)
    return get_path(spec, dotted)


@pytest.mark.parametrize("dotted", sorted(DECLARED))
def test_every_path_key_accepts_s3(dotted, tmp_path, s3_keys) -> None:
    kind = DECLARED[dotted]
    client = boto3.client("s3")
    key = f"{dotted.replace('.', '/')}/object.bin"
    uri = f"s3://keys/{key}"
    try:
        spec = _spec_with(dotted, uri)
    except ValidationError:  # a list of paths
        spec = _spec_with(dotted, [uri])
    value = _value(spec, dotted)
    listed = isinstance(value, list)
    cache = str(tmp_path / "cache")
    if kind == "output":
        with pytest.raises(SpecError, match=rf"{re.escape(dotted)}=s3://keys/.*written locally"):
            localize(spec, cache)
        return
    payload = f"contents of {dotted}".encode()
    client.put_object(Bucket="keys", Key=key, Body=payload)
    if kind == "model":
        client.put_object(Bucket="keys", Key=f"{key}.json", Body=b"{}")
    local = _value(localize(spec, cache), dotted)
    assert _value(spec, dotted) == value  # the loaded spec is left as it was
    if kind == "images":  # the loaders resolve image folders, archives and prefixes (same cache)
        assert local == value
        folder = resolve_image_dir(uri.rsplit("/", 1)[0], cache)
        assert (folder / "object.bin").read_bytes() == payload
        return
    path = Path(local[0] if listed else local)
    assert path.is_file() and path.read_bytes() == payload and str(path).startswith(cache)
    if kind == "model":
        assert path.with_name(path.name + ".json").is_file()  # the metadata sidecar came along


def test_a_cache_file_not_yet_in_s3_is_written_locally(tmp_path, s3_keys, caplog) -> None:
    dotted = "gen_trt_engine.tensorrt.calibration.cal_cache_file"
    local = get_path(localize(_spec_with(dotted, "s3://keys/new/cal.bin"), str(tmp_path)), dotted)
    assert local.startswith(str(tmp_path)) and local.endswith("cal.bin") and "not uploaded" in caplog.text


def test_a_model_folder_under_an_s3_prefix_is_downloaded_whole(tmp_path, s3_keys) -> None:
    """Hugging Face model directories are folders: train.pretrained_model_path=s3://bucket/prefix/ works too."""
    client = boto3.client("s3")
    for name in ("config.json", "model.safetensors"):
        client.put_object(Bucket="keys", Key=f"hf/rtdetr_v2/{name}", Body=name.encode())
    dotted = "train.pretrained_model_path"
    local = Path(get_path(localize(_spec_with(dotted, "s3://keys/hf/rtdetr_v2"), str(tmp_path)), dotted))
    assert all((local / name).read_bytes() == name.encode() for name in ("config.json", "model.safetensors"))
    with pytest.raises(DataError, match="s3://keys/hf/nothing"):
        localize(_spec_with(dotted, "s3://keys/hf/nothing"), str(tmp_path))
