"""TAO's skill-bank layout: a model directory that TAO's AutoML runner (``tao_automl.runner``) can drive.

``rtdetr default_specs results_dir=DIR --skill`` writes, for every action TAO's runner can launch::

    DIR/schemas/<action>.schema.json                 the action's search space and spec schema
    DIR/references/spec_template_<action>.yaml       the base spec (the schema's defaults)
    DIR/references/skill_info.yaml                   network_arch and, per action, how to run it
    DIR/scripts/rtdetr_job.py                        the python_script the runner executes

The schema is ``schemas/<action>.schema.json`` in TAO's dialect, which its runner validates strictly:

- only the sections the action reads;
- one ``type`` per key (a nullable section or list is declared with its own type and left out when
  unset, as TAO's specs do; ``model.num_points`` offers its single-number form);
- no free-form mappings (``inference.color_map``, ``quantize.backend_kwargs``): TAO can declare only
  mappings with named keys, so these are set in the spec instead;
- a searched number's ``minimum``/``maximum`` is its search window (``custom_param_ranges``)
  widened to take in its default: TAO samples uniformly inside those bounds.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from ..commands import ACTIONS
from ..io import atomic_write_text
from .schema import action_schema, find_node, schema_types

SKILL_ACTIONS = tuple(name for name, action in ACTIONS.items() if action.skill)
"""Actions TAO's runner may launch as a python_script (the deploy actions need TensorRT's own image)."""

LAUNCHER = '''"""Run one rtdetr action on the spec TAO's AutoML runner wrote: rtdetr_job.py ACTION --config SPEC."""

import sys

from rtdetr_tao.cli import main

if __name__ == "__main__":
    action, flag, spec, *rest = sys.argv[1:]
    if flag != "--config":
        sys.exit(f"usage: rtdetr_job.py ACTION --config SPEC [key=value ...], got {sys.argv[1:]}")
    sys.exit(main([action, "-e", spec, *rest]))
'''


def skill_schema(action: str) -> dict[str, Any]:
    """``action``'s schema in TAO's dialect (see the module docstring)."""
    schema = copy.deepcopy(action_schema(action))
    keep = ACTIONS[action].sections
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k in keep}
    schema["default"] = {k: v for k, v in schema["default"].items() if k in keep}
    schema["required"] = [k for k in schema.get("required", ()) if k in keep]
    for key in ("automl_default_parameters", "automl_disabled_parameters"):
        schema[key] = [k for k in schema[key] if k.split(".", 1)[0] in keep]
    ranges = schema["custom_param_ranges"] = {
        k: v for k, v in schema["custom_param_ranges"].items() if k.split(".", 1)[0] in keep
    }
    _single_types(schema["properties"], schema["default"])
    for key, window in ranges.items():
        node = find_node(schema, key)
        default = node.get("default")
        node["minimum"] = min(window["valid_min"], default) if default is not None else window["valid_min"]
        node["maximum"] = max(window["valid_max"], default) if default is not None else window["valid_max"]
    return schema


def skill_info() -> dict[str, Any]:
    """``references/skill_info.yaml``: every action runs ``scripts/rtdetr_job.py`` on a YAML spec."""
    return {
        "network_arch": "rtdetr",
        "description": "RT-DETRv2 object detection with rtdetr_tao (pip install rtdetr-tao).",
        "actions": {
            action: {
                "config_format": "yaml",
                "execution": {
                    "type": "python_script",
                    "script": "scripts/rtdetr_job.py",
                    "args": [action, "--config", "{config_path}"],
                },
            }
            for action in SKILL_ACTIONS
        },
    }


def skill_files() -> dict[str, str]:
    """Relative path → content of every file of the skill directory."""
    files = {"references/skill_info.yaml": yaml.safe_dump(skill_info(), sort_keys=False)}
    for action in SKILL_ACTIONS:
        schema = skill_schema(action)
        files[f"schemas/{action}.schema.json"] = json.dumps(schema, indent=2) + "\n"
        files[f"references/spec_template_{action}.yaml"] = yaml.safe_dump(schema["default"], sort_keys=False)
    files["scripts/rtdetr_job.py"] = LAUNCHER
    return files


def write_skill(root: str | Path) -> list[Path]:
    """Write the skill directory under ``root`` (atomically, file by file)."""
    written = []
    for rel, content in skill_files().items():
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, content)
        written.append(path)
    return written


def _single_types(props: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Give every node one non-null type TAO's runner accepts; drop what TAO cannot declare (and its default)."""
    for name in list(props):
        node = props[name]
        types = [t for t in schema_types(node) if t != "null"]
        if "object" in types and not node.get("properties"):
            del props[name]
            defaults.pop(name, None)
            continue
        if isinstance(node.get("type"), list):
            node["type"] = types[0]
            if node.get("default", 0) is None:
                del node["default"]
        elif "anyOf" in node and len(types) > 1:  # int | list[int]: the single-number form
            first = next(b for b in node.pop("anyOf") if b.get("type") == types[0])
            node.update(first)
        if "properties" in node:
            sub = defaults.get(name)
            _single_types(node["properties"], sub if isinstance(sub, dict) else {})
