"""Every spec key that names a file or folder.

Keys are declared with ``spec_field(path=kind)`` (:class:`~rtdetr_tao.config.fields.PathKey`); nothing else
lists them. :func:`rtdetr_tao.data.localize.localize` turns their ``s3://`` values into local files before an
action runs. Torch-free.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from .fields import PathKey, PathKind


def path_keys(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, PathKind]]:
    """``(dotted key, kind)`` of every path-valued field of ``model`` and of the sections below it."""
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        marks = [m for m in info.metadata if isinstance(m, PathKey)]
        if marks:
            yield dotted, marks[0].kind
        for section in _sections(info.annotation):
            yield from path_keys(section, f"{dotted}.")


def _sections(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _sections(arg)
