"""Spec loading: YAML file (safe loader) → dotted overrides → ``${...}`` references → validation.

Every problem becomes one :class:`~rtdetr_tao.errors.SpecError` line that names the file or the
override, the dotted key, the bad value and what would be accepted.

``???`` (TAO's "you must fill this in") marks a key as missing: it takes its default, and an
action that needs it (its ``required`` in :mod:`rtdetr_tao.commands`) refuses to run and says which
key to set. ``''`` is TAO's "unset" (its generated specs write it for every path they leave empty, e.g. an
unused ``test_data_sources``): the key takes its default, and a section whose values are all ``''`` is unset
as a whole.

Limits (a spec is a few hundred values; these only stop hostile or broken input): a spec file holds at most
``MAX_SPEC_BYTES``; after YAML aliases and ``${...}`` references are expanded, the spec holds at most
``MAX_SPEC_NODES`` values, no string is longer than ``MAX_STRING_CHARS`` and references nest at most
``MAX_REFERENCE_DEPTH`` deep; sections nest at most ``MAX_NESTING`` deep.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..commands import ACTIONS, Action
from ..errors import SpecError
from .compat import compatibility_warnings
from .experiment import ExperimentSpec, get_path
from .fields import MISSING

_REF = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")

MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_NODES = 100_000
MAX_STRING_CHARS = 65_536
MAX_REFERENCE_DEPTH = 32
MAX_NESTING = 64

_NO_ACTION = Action("", "", help="")  # what an undeclared action needs: nothing


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec plus what loading noticed on the way."""

    spec: Any  # ExperimentSpec unless load_spec got another root model
    source: str
    missing: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def load_spec(
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    action: str | None = None,
    root: type[BaseModel] = ExperimentSpec,
) -> LoadedSpec:
    """Load, override, resolve and validate a spec; check what ``action`` needs.

    ``path`` may be None (defaults plus overrides only). ``root`` is the spec model (ExperimentSpec,
    or another top-level model such as the AutoML spec).
    """
    source = str(path) if path is not None else "spec"
    data = read_yaml(path) if path is not None else {}
    origins: dict[str, str] = {}
    for item in overrides:
        key, value = parse_override(item)
        apply_override(data, key, value, item)
        origins[key] = f"override '{item}'"
    data = resolve_references(data, source, root)
    missing: list[str] = []
    data = strip_missing(data, "", missing)
    data = strip_unset(data)
    try:
        spec = root.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source, origins, missing, root)) from None
    warnings: list[str] = compatibility_warnings(spec, source) if isinstance(spec, ExperimentSpec) else []
    if action is not None:
        check_action(spec, action, source, missing)
        required = set(ACTIONS.get(action, _NO_ACTION).required)
        warnings += [
            f"{source}: {key} is '???' and keeps its default ({action} does not need it)"
            for key in missing
            if key not in required
        ]
    return LoadedSpec(spec=spec, source=source, missing=tuple(missing), warnings=tuple(warnings))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; errors name the file and the position."""
    p = Path(path)
    if not p.exists():
        raise SpecError(f"spec file not found: {p} (check the -e path)")
    if not p.is_file():
        raise SpecError(f"spec path is not a file: {p}")
    try:
        if p.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(f"spec file {p} is {p.stat().st_size} bytes; a spec may hold at most {MAX_SPEC_BYTES}")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {p}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise SpecError(f"{p}: invalid YAML: the values are nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{p}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(
            f"{p}: the top level must be a mapping of sections (model:, dataset:, ...), not a {type(data).__name__}"
        )
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` → (``a.b``, YAML-parsed value). ``~a.b`` deletes (value is the sentinel _DELETE)."""
    if item.startswith("~"):
        return item[1:].split("=", 1)[0], _DELETE
    key, sep, raw = item.partition("=")
    key = key.strip().lstrip("+")
    if not sep or not key:
        raise SpecError(f"override '{item}' is not of the form key=value (e.g. train.num_epochs=10)")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*", key):
        raise SpecError(f"override '{item}': '{key}' is not a dotted key (e.g. train.optim.lr)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except RecursionError:
        raise SpecError(f"override '{item}': the value is nested too deeply") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"override '{item}': the value is not valid YAML: {problem}") from None
    return key, value


class _Delete:
    def __repr__(self) -> str:
        return "<delete>"


_DELETE = _Delete()


def apply_override(data: dict[str, Any], key: str, value: Any, item: str) -> None:
    """Set (or delete) ``key`` in the nested mapping, creating sections on the way."""
    parts = key.split(".")
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        child = _child(node, part, item)
        if child is None or (not isinstance(child, (dict, list))):
            if value is _DELETE:
                return
            child = {}
            _assign(node, part, child, item)
        node = child
        if not isinstance(node, (dict, list)):
            raise SpecError(f"override '{item}': {'.'.join(parts[: depth + 1])} is not a section")
    if value is _DELETE:
        if isinstance(node, dict):
            node.pop(parts[-1], None)
        return
    _assign(node, parts[-1], copy.deepcopy(value), item)


def _child(node: Any, part: str, item: str) -> Any:
    if isinstance(node, list):
        index = _index(node, part, item)
        return node[index]
    return node.get(part)


def _assign(node: Any, part: str, value: Any, item: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, item)] = value
    else:
        node[part] = value


def _index(node: list[Any], part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise SpecError(f"override '{item}': list index '{part}' is out of range (the list has {len(node)} items)")
    return int(part)


def resolve_references(data: dict[str, Any], source: str, root: type[BaseModel] = ExperimentSpec) -> dict[str, Any]:
    """Replace ``${a.b}`` references (OmegaConf style, absolute keys only) by the values they name.

    A key the spec does not set refers to its default, as in TAO's structured configs. YAML aliases and references
    are expanded within the module's limits (a "billion laughs" spec is refused, not expanded).
    """
    defaults = _defaults(root)
    budget = [MAX_SPEC_NODES]

    def lookup(dotted: str, where: str, seen: tuple[str, ...]) -> Any:
        if dotted in seen:
            raise SpecError(f"{source}: {where}: circular reference ${{{dotted}}}")
        if len(seen) >= MAX_REFERENCE_DEPTH:
            raise SpecError(f"{source}: {where}: references nest more than {MAX_REFERENCE_DEPTH} deep")
        for root in (data, defaults):
            node: Any = root
            for part in dotted.split("."):
                if isinstance(node, dict) and part in node:
                    node = node[part]
                elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                else:
                    break
            else:
                return resolve(node, dotted, (*seen, dotted))
        raise SpecError(f"{source}: {where}: '${{{dotted}}}' refers to an unknown key")

    def resolve(node: Any, where: str, seen: tuple[str, ...]) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise SpecError(
                f"{source}: the spec expands to more than {MAX_SPEC_NODES} values (YAML aliases or ${{...}} "
                f"references repeated); remove the repetition (near {where or 'the top'})"
            )
        if isinstance(node, dict | list) and where.count(".") >= MAX_NESTING:
            raise SpecError(f"{source}: {where.split('.')[0]}: sections nest more than {MAX_NESTING} deep")
        if isinstance(node, dict):
            return {k: resolve(v, f"{where}.{k}" if where else str(k), seen) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v, f"{where}.{i}", seen) for i, v in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            whole = _REF.fullmatch(node)
            if whole:
                return lookup(whole.group(1), where, seen)
            text = _REF.sub(lambda m: _bounded(str(lookup(m.group(1), where, seen)), where), node)
            return _bounded(text, where)
        return _bounded(node, where) if isinstance(node, str) else node

    def _bounded(text: str, where: str) -> str:
        if len(text) > MAX_STRING_CHARS:
            raise SpecError(
                f"{source}: {where}: the value is longer than {MAX_STRING_CHARS} characters after "
                "${...} references are expanded"
            )
        return text

    return resolve(data, "", ())


def _defaults(root: type[BaseModel]) -> dict[str, Any]:
    """The root model's defaults as plain data (fields without a default are left out)."""
    values: dict[str, Any] = {}
    for name, info in root.model_fields.items():
        if not info.is_required():
            default = info.get_default(call_default_factory=True)
            values[name] = default.model_dump(mode="json") if isinstance(default, BaseModel) else default
    return values


def strip_missing(node: Any, prefix: str, missing: list[str]) -> Any:
    """Drop ``???`` values (recording their dotted keys); a mapping or list left empty by that goes too."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if _is_missing(value):
                missing.append(dotted)
                continue
            kept = strip_missing(value, dotted, missing)
            if isinstance(value, (dict, list)) and value and _is_missing_tree(value):
                missing.append(dotted)
                continue
            out[key] = kept
        return out
    if isinstance(node, list):
        return [strip_missing(v, f"{prefix}.{i}", missing) for i, v in enumerate(node) if not _is_missing(v)]
    return node


def strip_unset(node: Any) -> Any:
    """Drop TAO's ``''`` (unset) values; a mapping or list left empty by that goes too."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            kept = strip_unset(value)
            if kept == "" or (isinstance(value, (dict, list)) and value and kept in ({}, [])):
                continue
            out[key] = kept
        return out
    if isinstance(node, list):
        return [kept for kept in (strip_unset(v) for v in node) if kept != "" and kept not in ({}, [])]
    return node


def _is_missing(value: Any) -> bool:
    return isinstance(value, str) and value.strip() == MISSING


def _is_missing_tree(value: Any) -> bool:
    """True when every leaf of a mapping/list is ``???`` (e.g. ``{image_dir: ???, json_file: ???}``)."""
    if isinstance(value, dict):
        return bool(value) and all(_is_missing(v) or _is_missing_tree(v) for v in value.values())
    if isinstance(value, list):
        return bool(value) and all(_is_missing(v) or _is_missing_tree(v) for v in value)
    return False


def check_action(spec: ExperimentSpec, action: str, source: str, missing: list[str] | tuple[str, ...] = ()) -> None:
    """Raise :class:`SpecError` when ``spec`` lacks what ``action`` needs."""
    problems = []
    record = ACTIONS.get(action, _NO_ACTION)
    for key in record.required:
        if get_path(spec, key) is None:
            how = "it is '???'" if key in missing else "it is not set"
            problems.append(
                f"{key} is required by {action.replace('_', ' ')} but {how}; set it in the spec or pass {key}=..."
            )
    for rule in record.rules:
        message = rule(spec)
        if message:
            problems.append(message)
    if problems:
        raise SpecError(_join(source, problems))


def format_validation_error(
    exc: ValidationError,
    source: str,
    origins: dict[str, str],
    missing: list[str] | tuple[str, ...] = (),
    root: type[BaseModel] = ExperimentSpec,
) -> str:
    """One line for all of a ValidationError's problems, each with its key, value and fix."""
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for err in exc.errors(include_url=False):
        path, owner, is_section = _dotted(err["loc"], root)
        if path in seen:
            continue  # a union reports every branch; the first is enough
        seen.add(path)
        origin = _origin(path, origins, source)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            problems.append((origin, f"unknown key '{path}'{_did_you_mean(path, owner)}"))
        elif err["type"] == "missing" and path.replace("[", ".").replace("]", "") in missing:
            problems.append((origin, f"{path} is '???': set it in the spec or pass {path}=..."))
        elif err["type"] == "missing":
            problems.append((origin, f"{path} is missing (required inside its section)"))
        elif is_section and err["type"] == "value_error":
            problems.append((origin, message))  # cross-field rules name their keys themselves
        else:
            value = err.get("input")
            shown = f" (got {value!r})" if len(repr(value)) < 100 else ""
            problems.append((origin, f"{path or 'spec'}: {message}{shown}"))
    origins_used = {origin for origin, _ in problems}
    if len(origins_used) == 1:
        return _join(origins_used.pop(), [text for _, text in problems])
    return _join(None, [f"{origin}: {text}" for origin, text in problems])


def _join(source: str | None, problems: list[str]) -> str:
    """``source: problem`` or ``source: N problems: a; b`` — always one line."""
    head = f"{source}: " if source else ""
    if len(problems) == 1:
        return head + problems[0]
    return head + f"{len(problems)} problems: " + "; ".join(problems)


def _origin(path: str, origins: dict[str, str], source: str) -> str:
    """Where a bad key came from: the override that set it (or a key above or below it), else the file."""
    dotted = path.replace("[", ".").replace("]", "")
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in origins:
            return origins[".".join(parts[:n])]
    below = [origin for key, origin in origins.items() if key.startswith(dotted + ".")]
    return below[0] if below else source


def _dotted(loc: tuple[Any, ...], root: type[BaseModel]) -> tuple[str, type[BaseModel] | None, bool]:
    """A pydantic error location as ``a.b[0].c`` (union-branch tags skipped), the model owning the
    leaf, and whether the location is a whole section (a model validator's error)."""
    model: Any = root
    owner: type[BaseModel] | None = root
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(model, type) and issubclass(model, BaseModel):
            owner = model
            out += f".{part}" if out else part
            known = part in model.model_fields
            model = _inner_model(model.model_fields[part].annotation) if known else None
        # else: a union-branch tag such as 'list[int]' or 'function-after[...]', not a key
    is_section = isinstance(model, type) and issubclass(model, BaseModel)
    return out, owner, is_section


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside ``X``, ``X | None`` or ``list[X]``, else the annotation itself."""
    import typing

    stack = [annotation]
    while stack:
        current = stack.pop()
        if isinstance(current, type) and issubclass(current, BaseModel):
            return current
        stack.extend(typing.get_args(current))
    return annotation


def _did_you_mean(path: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    leaf = path.rsplit(".", 1)[-1].split("[")[0]
    names = list(model.model_fields)
    close = difflib.get_close_matches(leaf, names, n=1, cutoff=0.6)
    if close:
        parent = path.rsplit(".", 1)[0] + "." if "." in path else ""
        return f" (did you mean '{parent}{close[0]}'?)"
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f"; valid keys here: {shown}"
