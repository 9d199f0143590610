"""JSON Schemas and YAML spec templates, generated from the spec models.

``schemas/<action>.schema.json`` is real JSON Schema (draft 2020-12, every ``$ref`` inlined so a
plain reader finds ``properties.train.properties.optim.properties.lr``) that keeps TAO's AutoML
annotations under TAO's names: per field ``automl_enabled``, ``popular``, ``math_cond``,
``depends_on``, ``parent_param``, ``option_weights``; at the top ``default``,
``automl_default_parameters``, ``automl_disabled_parameters``, ``popular`` and ``required``.

It is written so that TAO's readers (tao-core's and tao_automl's schema flattening, which turn
``minimum``/``maximum`` into ``valid_min``/``valid_max`` and read one ``type`` per key, and
tao-core's ``validate_jsonschema``) see what JSON Schema says:

- an exclusive bound also stands as the inclusive ``minimum``/``maximum`` (with ``math_cond "> x"``
  for a lower one), the exclusive keyword staying for JSON Schema validators;
- a nullable scalar is ``anyOf: [{type: X}, {type: null}]`` with its bounds and enum beside it, so the
  one non-null ``type`` is X;
- ``default`` leaves out null values (TAO's defaults leave unset keys out);
- ``custom_param_ranges`` gives each searched key's ``automl_search_range`` as TAO's
  ``{valid_min, valid_max}`` override, ready for ``tao_automl.AutoML(custom_param_ranges=...)``
  (TAO samples uniformly inside ``minimum``/``maximum`` otherwise, and has no log scale).
``spec_templates/spec_template_<action>.yaml`` shows the sections an action reads, every key with
its default and a comment, and ``???`` where the action needs a value.

Both are generated output: ``rtdetr default_specs results_dir=.`` rewrites them, and
``rtdetr default_specs --check`` (and a test) fails when the committed files differ.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from ..commands import ACTIONS, SPEC_ACTIONS
from .compat import mark_schema
from .experiment import ExperimentSpec
from .fields import MISSING

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def base_schema() -> dict[str, Any]:
    """ExperimentSpec's JSON Schema with every ``$ref`` inlined and nullable scalars flattened."""
    raw = ExperimentSpec.model_json_schema(mode="validation")
    defs = raw.pop("$defs", {})
    schema = _simplify(_inline(raw, defs))
    mark_schema(schema["properties"])
    return schema


def action_schema(action: str) -> dict[str, Any]:
    """The schema of ``action``: the whole spec, with what the action needs marked required."""
    schema = base_schema()
    for dotted in ACTIONS[action].required:
        _mark_required(schema, dotted.split("."))
    defaults = action_defaults(action, sections=None)
    automl_on, automl_off = _automl_lists(schema["properties"], "")
    popular = _popular(schema["properties"])
    out: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT,
        "title": f"{ACTIONS[action].command} spec",
        "description": ACTIONS[action].description,
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
        "default": without_nulls(defaults),
        "automl_default_parameters": automl_on,
        "automl_disabled_parameters": automl_off,
        "custom_param_ranges": search_ranges(schema, automl_on),
    }
    if popular:
        out["popular"] = popular
    return out


def schema_types(node: dict[str, Any]) -> list[str]:
    """The JSON types a schema node allows: its ``type`` (a name or a list) or its ``anyOf`` branches' types."""
    kind = node.get("type")
    if kind is None:
        kind = [b["type"] for b in node.get("anyOf", ()) if isinstance(b.get("type"), str)]
    return [kind] if isinstance(kind, str) else list(kind)


def find_node(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The schema node of a dotted key (KeyError when a part is not a property)."""
    node = schema
    for part in dotted.split("."):
        node = node["properties"][part]
    return node


def search_ranges(schema: dict[str, Any], keys: list[str]) -> dict[str, dict[str, float]]:
    """TAO's ``custom_param_ranges`` for the ``keys`` that carry an ``automl_search_range``.

    TAO nudges a sampled value that lands on ``valid_min`` (or ``valid_max``) by a tenth of that bound, so
    a window narrower than [0.9 x high, high] (``train.ema.decay``'s [0.99, 0.9999]) would be left, even
    past 1; the range given to TAO starts at 0.9 x high at the latest, which keeps both nudges inside.
    """
    ranges = {}
    for key in keys:
        window = find_node(schema, key).get("automl_search_range")
        if window:
            low, high = window
            if low > 0 and low > 0.9 * high:
                low = round(0.9 * high, 12)
            ranges[key] = {"valid_min": low, "valid_max": high}
    return ranges


def without_nulls(values: Any) -> Any:
    """``values`` without its null entries (at any depth): TAO leaves a key it does not set out."""
    if isinstance(values, dict):
        return {k: without_nulls(v) for k, v in values.items() if v is not None}
    if isinstance(values, list):
        return [without_nulls(v) for v in values]
    return values


def action_defaults(action: str, sections: tuple[str, ...] | None) -> dict[str, Any]:
    """Default values of the spec (only ``sections`` when given), ``???`` where ``action`` needs a value."""
    values = ExperimentSpec().model_dump(mode="json")
    props = base_schema()["properties"]
    for key, value in values.items():
        if value is None and "properties" in props[key]:
            values[key] = _object_defaults(props[key])  # e.g. distill: show its keys with their defaults
    for dotted in ACTIONS[action].required:
        _set_placeholder(values, props, dotted.split("."))
    if sections is not None:
        values = {k: values[k] for k in sections}
    return values


def render_template(action: str) -> str:
    """The commented YAML template of ``action``."""
    props = base_schema()["properties"]
    record = ACTIONS[action]
    values = action_defaults(action, record.sections)
    lines = [
        f"# {record.command} -e spec.yaml [key=value ...]",
        f"# {record.description}",
        "# Generated from rtdetr_tao's spec models by `rtdetr default_specs`; do not edit by hand.",
        "# Replace every ??? with a value. Every other key shows its default and may be deleted.",
    ]
    _emit(props, values, 0, lines)
    return "\n".join(lines) + "\n"


def manifest() -> dict[str, Any]:
    """``schemas/manifest.json``: every action with its command, schema and template."""
    return {
        "network": "rtdetr",
        "actions": {
            action: {
                "command": ACTIONS[action].command,
                "description": ACTIONS[action].description,
                "schema": f"{action}.schema.json",
                "template": f"spec_template_{action}.yaml",
                "required": list(ACTIONS[action].required),
            }
            for action in SPEC_ACTIONS
        },
    }


def generated_files() -> dict[str, str]:
    """Relative path → content of every generated file."""
    files = {
        f"schemas/{action}.schema.json": json.dumps(action_schema(action), indent=2) + "\n" for action in SPEC_ACTIONS
    }
    files["schemas/manifest.json"] = json.dumps(manifest(), indent=2) + "\n"
    files.update({f"spec_templates/spec_template_{action}.yaml": render_template(action) for action in SPEC_ACTIONS})
    return files


def write_generated(root: str | Path) -> list[Path]:
    """Write every generated file under ``root`` (atomically, file by file)."""
    written = []
    for rel, content in generated_files().items():
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


def stale_files(root: str | Path) -> list[str]:
    """Generated files under ``root`` that are missing or differ from what the code generates."""
    stale = []
    for rel, content in generated_files().items():
        path = Path(root) / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            stale.append(rel)
    return stale


# --- schema transformation -------------------------------------------------------------------


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            return _inline({**target, **siblings}, defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


SCALARS = ("string", "number", "integer", "boolean")


def _simplify(node: Any) -> Any:
    """Make a node readable by TAO as well as by JSON Schema validators.

    ``anyOf: [X, {type: null}]`` → ``anyOf: [{type: X.type}, {type: null}]`` with X's other keywords
    beside it when X is a scalar (TAO reads one non-null type and the bounds next to it), else X with
    ``type: [X.type, "null"]``; an exclusive bound gains its inclusive ``minimum``/``maximum``.
    """
    if isinstance(node, list):
        return [_simplify(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _simplify(v) for k, v in node.items()}
    branches = node.get("anyOf")
    if isinstance(branches, list) and len(branches) == 2 and {"type": "null"} in branches:
        other = next(b for b in branches if b != {"type": "null"})
        if isinstance(other.get("type"), str):
            merged = {**other, **{k: v for k, v in node.items() if k != "anyOf"}}
            if "enum" in merged:
                merged["enum"] = [*merged["enum"], None]
            if other["type"] in SCALARS:
                del merged["type"]
                return {"anyOf": [{"type": other["type"]}, {"type": "null"}], **merged}
            merged["type"] = [other["type"], "null"]
            return merged
    return _inclusive_bounds(node)


def _inclusive_bounds(node: dict[str, Any]) -> dict[str, Any]:
    """An exclusive bound also as the inclusive ``minimum``/``maximum`` TAO reads (``math_cond "> x"`` for a
    lower one, unless the node has its own condition); the exclusive keyword keeps JSON Schema exact."""
    if "exclusiveMinimum" in node and "minimum" not in node:
        node["minimum"] = node["exclusiveMinimum"]
        node.setdefault("math_cond", f"> {node['exclusiveMinimum']}")
    if "exclusiveMaximum" in node and "maximum" not in node:
        node["maximum"] = node["exclusiveMaximum"]
    return node


def _mark_required(schema: dict[str, Any], parts: list[str]) -> None:
    node = schema
    for part in parts:
        node.setdefault("required", [])
        if part not in node["required"]:
            node["required"].append(part)
        node = node["properties"][part]
        _drop_null(node)
    _forbid_placeholder(node)


def _forbid_placeholder(node: dict[str, Any]) -> None:
    """A required value (and every required string inside it) may not be the ``???`` placeholder."""
    if "string" in schema_types(node):
        node["minLength"] = max(node.get("minLength", 0), 1)
        node["not"] = {"const": MISSING}
    for name in node.get("required", ()):
        _forbid_placeholder(node["properties"][name])
    if isinstance(node.get("items"), dict):
        _forbid_placeholder(node["items"])


def _drop_null(node: dict[str, Any]) -> None:
    if isinstance(node.get("type"), list):
        node["type"] = [t for t in node["type"] if t != "null"]
        if len(node["type"]) == 1:
            node["type"] = node["type"][0]
    if isinstance(node.get("anyOf"), list) and {"type": "null"} in node["anyOf"]:
        rest = [b for b in node.pop("anyOf") if b != {"type": "null"}]
        node.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
    if "enum" in node:
        node["enum"] = [e for e in node["enum"] if e is not None]
    if node.get("default", 0) is None:
        del node["default"]


def _object_defaults(prop: dict[str, Any]) -> dict[str, Any]:
    return {name: sub.get("default") for name, sub in prop["properties"].items()}


def _placeholder(prop: dict[str, Any]) -> Any:
    """``???`` for a scalar; for a structure, its required keys as ``???`` and the rest at their defaults."""
    if "properties" in prop:
        required = set(prop.get("required", ()))
        return {
            name: _placeholder(sub) if name in required else sub.get("default")
            for name, sub in prop["properties"].items()
        }
    if "array" in schema_types(prop) and isinstance(prop.get("items"), dict):
        return [_placeholder(prop["items"])]
    return MISSING


def _set_placeholder(values: dict[str, Any], props: dict[str, Any], parts: list[str]) -> None:
    for part in parts[:-1]:
        prop = props[part]
        if values.get(part) is None:
            values[part] = _object_defaults(prop)
        values, props = values[part], prop["properties"]
    values[parts[-1]] = _placeholder(props[parts[-1]])


def _automl_lists(props: dict[str, Any], prefix: str) -> tuple[list[str], list[str]]:
    on: list[str] = []
    off: list[str] = []
    for name, prop in props.items():
        dotted = f"{prefix}{name}"
        flag = prop.get("automl_enabled")
        if flag is True:
            on.append(dotted)
        elif flag is False:
            off.append(dotted)
        if "properties" in prop and not prop.get("automl_frozen"):
            sub_on, sub_off = _automl_lists(prop["properties"], dotted + ".")
            on += sub_on
            off += sub_off
    return on, off


def _popular(props: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, prop in props.items():
        if "properties" in prop:
            inner = _popular(prop["properties"])
            if inner:
                out[name] = inner
        elif prop.get("popular"):
            out[name] = prop.get("default")
    return out


# --- YAML template -----------------------------------------------------------------------------


def _emit(props: dict[str, Any], values: dict[str, Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for name, value in values.items():
        prop = props[name]
        comment = _comment(prop)
        if comment:
            lines.append(f"{pad}# {comment}")
        if "properties" in prop and isinstance(value, dict):
            lines.append(f"{pad}{name}:")
            _emit(prop["properties"], value, indent + 2, lines)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            block = yaml.safe_dump(value, default_flow_style=False, sort_keys=False).rstrip("\n")
            lines.append(f"{pad}{name}:")
            lines.extend(f"{pad}{line}" for line in block.splitlines())
        else:
            lines.append(f"{pad}{name}: {_flow(value)}")


def _flow(value: Any) -> str:
    if value == MISSING:
        return MISSING
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _comment(prop: dict[str, Any]) -> str:
    text = prop.get("description", "")
    bounds = []
    if "exclusiveMinimum" in prop:
        bounds.append(f"> {prop['exclusiveMinimum']}")
    elif "minimum" in prop:
        bounds.append(f">= {prop['minimum']}")
    if "exclusiveMaximum" in prop:
        bounds.append(f"< {prop['exclusiveMaximum']}")
    elif "maximum" in prop:
        bounds.append(f"<= {prop['maximum']}")
    enum = [e for e in prop.get("enum", ()) if e is not None]
    if enum and "properties" not in prop:
        bounds.append("one of " + ", ".join(map(str, enum)))
    return f"{text} [{'; '.join(bounds)}]" if bounds else text
