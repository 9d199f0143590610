"""Field metadata shared by every spec section.

A spec field carries its JSON-Schema facts (description, bounds, enum) as ordinary Pydantic
constraints, which are enforced at load time, plus the AutoML annotations TAO's tools read
(``automl_enabled``, ``popular``, ``math_cond``, ``depends_on``, ``parent_param``,
``option_weights``) and our search hints (``automl_search_range``, ``automl_log_scale``). Those land
in ``json_schema_extra``, flow into ``schemas/*.json``, and ``rtdetr automl`` builds its search space
from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MISSING = "???"
"""TAO's placeholder for a value the user must supply."""


PathKind = Literal["file", "model", "cache", "images", "output"]


@dataclass(frozen=True)
class PathKey:
    """Marks a field whose value names a file or folder (``spec_field(path=...)``); read by
    :mod:`rtdetr_tao.config.paths`, which resolves ``s3://`` values. Kinds:

    * ``file``: a file the job reads;
    * ``model``: the same, with its optional ``<file>.json`` metadata sidecar (ONNX files, TensorRT engines);
    * ``cache``: a file read when present and (re)written otherwise (calibration and timing caches);
    * ``images``: an image folder, archive or single image (the data loaders resolve it, also ``s3://``);
    * ``output``: where a job writes; local only.
    """

    kind: PathKind


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, values are validated and frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def spec_field(
    default: Any = ...,
    *,
    description: str,
    title: str | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    automl: bool | None = None,
    popular: bool = False,
    math_cond: str | None = None,
    depends_on: str | None = None,
    parent_param: bool = False,
    option_weights: list[float] | None = None,
    search_range: tuple[float, float] | None = None,
    log_scale: bool = False,
    examples: list[Any] | None = None,
    schema_extra: dict[str, Any] | None = None,
    path: PathKind | None = None,
) -> Any:
    """A Pydantic ``Field`` with TAO-style AutoML metadata.

    ``automl``: True = tuned by default (listed in ``automl_default_parameters``), False = never
    tuned (``automl_disabled_parameters``), None = tunable only when a user lists it.
    ``search_range`` / ``log_scale``: where AutoML samples by default (inside the validation bounds, which
    are often far wider: a learning rate may be anything in (0, 1]) and whether it samples log-uniformly.
    ``schema_extra`` overrides generated JSON-Schema keywords, e.g. an ``enum`` that also lists the
    aliases a before-validator normalises. ``path``: the value names a file or folder (see :class:`PathKey`).
    """
    extra: dict[str, Any] = dict(schema_extra or {})
    if automl is not None:
        extra["automl_enabled"] = automl
    if popular:
        extra["popular"] = True
    if math_cond:
        extra["math_cond"] = math_cond
    if depends_on:
        extra["depends_on"] = depends_on
    if parent_param:
        extra["parent_param"] = True
    if option_weights:
        extra["option_weights"] = option_weights
    if search_range:
        extra["automl_search_range"] = list(search_range)
    if log_scale:
        extra["automl_log_scale"] = True
    info = Field(
        default,
        description=description,
        title=title,
        ge=ge,
        gt=gt,
        le=le,
        lt=lt,
        min_length=min_length,
        max_length=max_length,
        pattern=pattern,
        examples=examples,
        json_schema_extra=extra or None,
    )
    if path is not None:
        info.metadata.append(PathKey(path))
    return info
