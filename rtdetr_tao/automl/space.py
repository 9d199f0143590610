"""The search space, read from the train JSON Schema.

Every searched key becomes a :class:`Param`: its kind and range come from the schema node (type,
``minimum``/``maximum``/exclusive bounds, ``enum``, ``option_weights``, ``math_cond``, ``depends_on``)
narrowed by the ``automl_search_range`` hint or the user's ``automl.ranges``, and its sampling scale
from ``automl_log_scale``. Sampling goes through an Optuna trial (``suggest_*``), so any sampler works.

``math_cond`` forms understood: ``> x``, ``>= x``, ``< x``, ``<= x`` (x a number or ``depends_on``,
the value of another key: sampled in this trial if searched, else the base spec's) and ``^ 2``
(powers of two). A list of integers with ``< depends_on`` (``train.optim.lr_steps``) is sampled as
increasing milestones below the value it depends on, as many as the base spec lists.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..config.schema import schema_types
from ..errors import SpecError

Kind = Literal["float", "int", "pow2", "choice", "milestones"]
_COND = re.compile(r"^\s*(<=|>=|<|>)\s*(depends_on|[-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Param:
    """One searched key. ``low``/``high`` are inclusive; ``depends_on`` tightens ``high`` per trial."""

    key: str
    kind: Kind
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()
    weights: tuple[float, ...] = ()
    depends_on: str | None = None
    strict: bool = False  # the dependency's value itself is excluded ('<' rather than '<=')
    length: int = 1  # milestones

    def bounds(self, values: dict[str, Any]) -> tuple[float, float]:
        """``(low, high)`` for this trial, given the values of the keys it may depend on."""
        low, high = self.low, self.high
        if self.depends_on is not None:
            limit = values[self.depends_on]
            if self.kind == "float":
                limit = math.nextafter(limit, -math.inf) if self.strict else limit
            else:
                limit = limit - 1 if self.strict else limit
            high = min(high, limit)
            low = min(low, high)  # a hint above the dependency gives way to it
        return low, high

    def sample(self, trial: Any, values: dict[str, Any]) -> Any:
        """Draw this key's value with ``trial.suggest_*``."""
        low, high = self.bounds(values)
        if self.kind == "float":
            return trial.suggest_float(self.key, low, high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(low), int(high), log=self.log)
        if self.kind == "pow2":
            return trial.suggest_categorical(self.key, _powers_of_two(low, high))
        if self.kind == "choice":
            if not self.weights:
                return trial.suggest_categorical(self.key, list(self.choices))
            u = trial.suggest_float(f"{self.key}:u", 0.0, 1.0)  # inverse CDF keeps option_weights
            return self.choices[_weighted_index(u, self.weights)]
        steps = {trial.suggest_int(f"{self.key}[{i}]", int(low), int(high)) for i in range(self.length)}
        return sorted(steps)

    def as_params(self, value: Any, values: dict[str, Any]) -> dict[str, Any]:
        """The Optuna parameters that make :meth:`sample` return ``value`` (for enqueued trials)."""
        problem = self.check(value, values)
        if problem:
            raise SpecError(f"automl.enqueue_trials: {problem}")
        if self.kind == "milestones":
            padded = list(value) + [value[-1]] * (self.length - len(value))
            return {f"{self.key}[{i}]": v for i, v in enumerate(padded)}
        if self.kind == "choice" and self.weights:
            index = self.choices.index(value)
            total = sum(self.weights)
            return {f"{self.key}:u": (sum(self.weights[:index]) + self.weights[index] / 2) / total}
        return {self.key: value}

    def check(self, value: Any, values: dict[str, Any]) -> str | None:
        """Why ``value`` lies outside this trial's space, or None."""
        low, high = self.bounds(values)
        if self.kind == "choice":
            return None if value in self.choices else f"{self.key}={value!r} is not one of {list(self.choices)}"
        if self.kind == "milestones":
            ok = isinstance(value, list) and 0 < len(value) <= self.length and value == sorted(set(value))
            ok = ok and all(isinstance(v, int) and low <= v <= high for v in value)
            return (
                None if ok else f"{self.key}={value!r} must be up to {self.length} increasing ints in [{low}, {high}]"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{self.key}={value!r} is not a number"
        if self.kind in ("int", "pow2") and value != int(value):
            return f"{self.key}={value!r} is not an integer"
        if self.kind == "pow2" and value not in _powers_of_two(low, high):
            return f"{self.key}={value!r} is not a power of two in [{low}, {high}]"
        if not low <= value <= high:
            return f"{self.key}={value!r} is outside [{low}, {high}]"
        return None


def _powers_of_two(low: float, high: float) -> list[int]:
    powers = [2**e for e in range(0, 31) if low <= 2**e <= high]
    if not powers:
        raise SpecError(f"no power of two lies in [{low}, {high}]; widen the range in automl.ranges")
    return powers


def _weighted_index(u: float, weights: tuple[float, ...]) -> int:
    total, edge = sum(weights), 0.0
    for index, weight in enumerate(weights):
        edge += weight / total
        if u < edge:
            return index
    return max(i for i, weight in enumerate(weights) if weight > 0)  # u == 1 (or rounding): the last possible one


def build_space(
    schema: dict[str, Any],
    parameters: list[str] | None,
    ranges: dict[str, list[float]],
    base_value: Callable[[str], Any],
) -> list[Param]:
    """The params for ``parameters`` (None: the schema's ``automl_default_parameters``), dependencies first.

    ``base_value(key)`` is the base spec's value of a key (a milestone list keeps its length).
    """
    keys = list(schema["automl_default_parameters"] if parameters is None else parameters)
    disabled = set(schema["automl_disabled_parameters"])
    for key in keys:
        if key in disabled:
            raise SpecError(f"automl.parameters: {key} is in the schema's automl_disabled_parameters: never tuned")
    nodes = {key: _node(schema, key) for key in keys}
    for key in ranges:
        if key not in keys:
            raise SpecError(f"automl.ranges.{key}: the key is not searched; add it to automl.parameters")
    params = [_param(key, nodes[key], ranges.get(key), base_value) for key in keys]
    return _dependencies_first(params)


def dependencies(params: list[Param]) -> set[str]:
    """Keys the params depend on that are not searched themselves (their values come from the base spec)."""
    searched = {p.key for p in params}
    return {p.depends_on for p in params if p.depends_on and p.depends_on not in searched}


def sample_overrides(params: list[Param], trial: Any, base: dict[str, Any]) -> dict[str, Any]:
    """One configuration: ``{dotted key: value}`` for every param."""
    values = dict(base)
    out: dict[str, Any] = {}
    for param in params:
        out[param.key] = values[param.key] = param.sample(trial, values)
    return out


def _node(schema: dict[str, Any], key: str) -> dict[str, Any]:
    node = schema
    for depth, part in enumerate(key.split(".")):
        props = node.get("properties", {})
        if part not in props:
            close = difflib.get_close_matches(part, list(props), n=1)
            where = ".".join(key.split(".")[:depth]) or "the spec"
            hint = f" (did you mean '{'.'.join([*key.split('.')[:depth], close[0]])}'?)" if close else ""
            raise SpecError(f"automl.parameters: {key} is not a key of the train schema: {where} has no '{part}'{hint}")
        node = props[part]
    return node


def _param(key: str, node: dict[str, Any], user_range: list[float] | None, base_value: Callable[[str], Any]) -> Param:
    types = schema_types(node)
    kind_of = [t for t in types if t != "null"]
    cond = node.get("math_cond")
    depends_on = node.get("depends_on")
    if "enum" in node or kind_of == ["boolean"]:
        choices = tuple(node["enum"]) if "enum" in node else (False, True)
        weights = tuple(node.get("option_weights") or ())
        if weights and len(weights) != len(choices):
            raise SpecError(f"{key}: the schema gives {len(weights)} option_weights for {len(choices)} options")
        if user_range is not None:
            raise SpecError(f"automl.ranges.{key}: {key} is a choice among {list(choices)}, not a range")
        return Param(key, "choice", choices=choices, weights=weights)
    if kind_of == ["array"] and node.get("items", {}).get("type") == "integer" and depends_on:
        strict = _dependency_condition(key, cond)
        length = max(len(base_value(key) or []), 1)
        low = max(node["items"].get("minimum", 0), 1 if user_range is None else user_range[0])
        high = math.inf if user_range is None else user_range[1]
        return Param(key, "milestones", low=low, high=high, depends_on=depends_on, strict=strict, length=length)
    if kind_of not in (["integer"], ["number"]):
        raise SpecError(
            f"automl.parameters: {key} ({'/'.join(types) or 'union'}) has no search space; AutoML samples numbers, "
            "booleans, enums and integer milestone lists"
        )
    integer = kind_of == ["integer"]
    low, high = _schema_bounds(node, integer)
    strict = None
    if cond is not None and cond.strip() != "^ 2":
        match = _COND.match(cond)
        if not match:
            raise SpecError(f"{key}: the schema's math_cond '{cond}' is not understood by the search")
        op, operand = match.groups()
        if operand == "depends_on":
            strict = _dependency_condition(key, cond)
        else:
            low, high = _tighten(low, high, op, float(operand), integer)
    hint = user_range if user_range is not None else node.get("automl_search_range")
    if user_range is not None and not (low <= user_range[0] and user_range[1] <= high):
        raise SpecError(f"automl.ranges.{key}: {user_range} is not inside the schema's bounds {_shown_bounds(node)}")
    if hint is not None:
        low, high = max(low, hint[0]), min(high, hint[1])
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SpecError(
            f"automl.parameters: {key} has no {'lower' if not math.isfinite(low) else 'upper'} bound in the schema; "
            f"give one with automl.ranges: {{{key}: [low, high]}}"
        )
    log = bool(node.get("automl_log_scale")) and low > 0
    kind: Kind = "pow2" if cond is not None and cond.strip() == "^ 2" else ("int" if integer else "float")
    if kind == "pow2":
        low = max(low, 1)  # powers of two are positive whatever the schema's minimum
    return Param(
        key,
        kind,
        low=int(low) if integer else low,
        high=int(high) if integer else high,
        log=log,
        depends_on=depends_on if strict is not None else None,
        strict=bool(strict),
    )


def _shown_bounds(node: dict[str, Any]) -> str:
    """The schema's interval as written, e.g. ``(0, 1]``."""
    left = f"({node['exclusiveMinimum']}" if "exclusiveMinimum" in node else f"[{node.get('minimum', '-inf')}"
    right = f"{node['exclusiveMaximum']})" if "exclusiveMaximum" in node else f"{node.get('maximum', 'inf')}]"
    return f"{left}, {right}"


def _schema_bounds(node: dict[str, Any], integer: bool) -> tuple[float, float]:
    low, high = node.get("minimum", -math.inf), node.get("maximum", math.inf)
    if "exclusiveMinimum" in node:
        bound = node["exclusiveMinimum"]
        low = max(low, bound + 1 if integer else math.nextafter(bound, math.inf))
    if "exclusiveMaximum" in node:
        bound = node["exclusiveMaximum"]
        high = min(high, bound - 1 if integer else math.nextafter(bound, -math.inf))
    return low, high


def _tighten(low: float, high: float, op: str, x: float, integer: bool) -> tuple[float, float]:
    step = 1 if integer else 0
    if op == ">":
        low = max(low, x + step if integer else math.nextafter(x, math.inf))
    elif op == ">=":
        low = max(low, x)
    elif op == "<":
        high = min(high, x - step if integer else math.nextafter(x, -math.inf))
    else:
        high = min(high, x)
    return low, high


def _dependency_condition(key: str, cond: str | None) -> bool:
    """True for ``< depends_on``, False for ``<= depends_on``; anything else is refused."""
    match = _COND.match(cond or "")
    if not match or match.group(2) != "depends_on" or match.group(1) not in ("<", "<="):
        raise SpecError(f"{key}: depends_on needs math_cond '< depends_on' or '<= depends_on', not {cond!r}")
    return match.group(1) == "<"


def _dependencies_first(params: list[Param]) -> list[Param]:
    """The given order, except that a key comes after the searched key it depends on."""
    ordered: list[Param] = []
    pending = list(params)
    while pending:
        placed, searched = {p.key for p in ordered}, {p.key for p in pending}
        ready = next((p for p in pending if p.depends_on not in searched or p.depends_on in placed), None)
        if ready is None:
            raise SpecError(f"automl.parameters: circular depends_on among {', '.join(sorted(searched))}")
        ordered.append(ready)
        pending.remove(ready)
    return ordered
