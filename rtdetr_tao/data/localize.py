"""``s3://`` values of the spec's path keys turned into local files, once, before an action runs.

:func:`localize` walks the keys declared with ``spec_field(path=kind)`` (:mod:`rtdetr_tao.config.paths`) and
replaces each ``s3://`` value of a ``file``, ``model`` or ``cache`` key by its local copy (the object, or every
object under the prefix: a Hugging Face model folder), downloaded into the cache (``dataset.cache_dir``) by
:func:`rtdetr_tao.data.sources.resolve_file`, the resolver the data sources use too. ``images`` keys stay as given
(the loaders resolve folders, archives and prefixes themselves); ``output`` keys must be local. Torch-free.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel

from ..config.fields import PathKey, PathKind
from ..errors import DataError, SpecError
from .sources import cache_root, resolve_file, resolve_image_dir

log = logging.getLogger(__name__)


def localize(spec: BaseModel, cache_dir: str | None) -> BaseModel:
    """``spec`` with every ``s3://`` file-valued key replaced by its local copy (a new spec; ``spec`` is unchanged).

    Raises:
        SpecError: an ``output`` key is an ``s3://`` URI.
        DataError: an object cannot be read.
    """
    return _localize(spec, cache_dir, "")


def _localize(section: BaseModel, cache_dir: str | None, prefix: str) -> BaseModel:
    updates: dict[str, Any] = {}
    for name, info in type(section).model_fields.items():
        value, dotted = getattr(section, name), f"{prefix}{name}"
        marks = [m for m in info.metadata if isinstance(m, PathKey)]
        if marks:
            new = _resolve(marks[0].kind, value, cache_dir, dotted)
        elif isinstance(value, BaseModel):
            new = _localize(value, cache_dir, f"{dotted}.")
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            new = [_localize(v, cache_dir, f"{dotted}.{i}.") for i, v in enumerate(value)]
        else:
            continue
        if new != value:
            updates[name] = new
    return section.model_copy(update=updates) if updates else section


def _resolve(kind: PathKind, value: Any, cache_dir: str | None, dotted: str) -> Any:
    if isinstance(value, list):
        return [_resolve(kind, v, cache_dir, dotted) for v in value]
    if not isinstance(value, str) or not value.startswith("s3://") or kind == "images":
        return value
    if kind == "output":
        raise SpecError(f"{dotted}={value}: outputs are written locally; give a local path and upload it afterwards")
    if kind == "cache":
        try:
            return str(resolve_file(value, cache_dir))
        except DataError:  # not written yet: build it locally, in the cache
            digest = hashlib.sha256(value.encode()).hexdigest()[:16]
            local = cache_root(cache_dir) / "written" / digest / PurePosixPath(value).name
            log.warning("%s=%s does not exist yet; it will be written to %s (not uploaded)", dotted, value, local)
            return str(local)
    try:
        local = resolve_file(value, cache_dir)
    except DataError as error:  # a folder of files (a Hugging Face model directory) under an s3:// prefix
        try:
            local = resolve_image_dir(value, cache_dir)
        except DataError:
            raise error from None
    if kind == "model":
        with contextlib.suppress(DataError):  # the metadata sidecar of an engine or ONNX file, if there is one
            resolve_file(f"{value}.json", cache_dir)
    log.info("%s: %s → %s", dotted, value, local)
    return str(local)
