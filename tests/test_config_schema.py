"""Generated JSON Schemas and spec templates: in sync with the code, valid, and agreeing with Pydantic."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdetr_tao.commands import ACTIONS, SPEC_ACTIONS
from rtdetr_tao.config import ExperimentSpec, load_spec
from rtdetr_tao.config.schema import action_schema, stale_files
from rtdetr_tao.errors import SpecError

TRAIN_AUTOML_DEFAULTS = {
    "model.num_queries",
    "model.num_select",
    "model.enc_layers",
    "model.dec_layers",
    "dataset.batch_size",
    "dataset.augmentation.distortion_prob",
    "dataset.augmentation.iou_crop_prob",
    "train.ema.decay",
    "train.optim.lr",
    "train.optim.lr_backbone",
    "train.optim.weight_decay",
    "train.optim.lr_step_size",
    "train.optim.lr_decay",
}


def test_committed_files_match_the_code(repo_root):
    stale = stale_files(repo_root)
    assert not stale, f"regenerate with `rtdetr default_specs results_dir=.`: {stale}"


@pytest.mark.parametrize("action", SPEC_ACTIONS)
def test_schema_is_valid_json_schema(repo_root, action):
    schema = json.loads((repo_root / "schemas" / f"{action}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert json.dumps(schema, allow_nan=False)  # no Infinity / NaN: strict JSON


def test_manifest_lists_every_action(repo_root):
    manifest = json.loads((repo_root / "schemas" / "manifest.json").read_text())
    assert set(manifest["actions"]) == set(SPEC_ACTIONS)
    for entry in manifest["actions"].values():
        assert (repo_root / "schemas" / entry["schema"]).is_file()
        assert (repo_root / "spec_templates" / entry["template"]).is_file()


def test_train_schema_carries_automl_metadata():
    schema = action_schema("train")
    assert set(schema["automl_default_parameters"]) == TRAIN_AUTOML_DEFAULTS
    disabled = set(schema["automl_disabled_parameters"])
    assert {"dataset.num_classes", "results_dir", "train.num_gpus", "dataset.train_data_sources"} <= disabled
    assert not any(p.startswith("distill.teacher.") for p in schema["automl_default_parameters"])
    lr = schema["properties"]["train"]["properties"]["optim"]["properties"]["lr"]
    assert (lr["type"], lr["exclusiveMinimum"], lr["maximum"], lr["default"], lr["automl_enabled"]) == (
        "number",
        0.0,
        1.0,
        1e-4,
        True,
    )
    steps = schema["properties"]["train"]["properties"]["optim"]["properties"]["lr_steps"]
    assert steps["depends_on"] == "train.num_epochs" and steps["math_cond"] == "< depends_on"
    batch = schema["properties"]["dataset"]["properties"]["batch_size"]
    assert batch["math_cond"] == "^ 2" and batch["minimum"] == -1
    assert schema["popular"]["train"]["num_epochs"] == 10
    assert schema["default"]["dataset"]["train_data_sources"] == [{"image_dir": "???", "json_file": "???"}]
    assert schema["required"] == ["dataset"]


@pytest.mark.parametrize("action", SPEC_ACTIONS)
def test_template_filled_in_validates_in_both(repo_root, action):
    """A template with its ??? filled validates in Pydantic and against the action's schema; unfilled, in neither."""
    template = repo_root / "spec_templates" / f"spec_template_{action}.yaml"
    data = yaml.safe_load(template.read_text())
    schema = action_schema(action)
    filled = _fill(data)
    load_spec(template, [f"{k}={json.dumps(_get(filled, k))}" for k in ACTIONS[action].required], action=action)
    jsonschema.validate(filled, schema)
    with pytest.raises(SpecError, match="is required by|is '\\?\\?\\?'"):
        load_spec(template, action=action)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def _fill(node):
    if isinstance(node, dict):
        return {k: _fill(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v) for v in node]
    return "/data/x" if node == "???" else node


def _get(node, dotted):
    for part in dotted.split("."):
        node = node[part]
    return node


def _numeric_leaves(props, prefix=""):
    for name, prop in props.items():
        if "properties" in prop:
            if not prop.get("automl_frozen"):
                yield from _numeric_leaves(prop["properties"], f"{prefix}{name}.")
        elif prop.get("type") in ("integer", "number") and f"{prefix}{name}" not in CROSS_FIELD:
            yield f"{prefix}{name}", prop


# Keys whose validity also depends on other keys: Pydantic validators check those, JSON Schema cannot.
CROSS_FIELD = {
    "model.num_select",
    "model.num_feature_levels",
    "model.eval_idx",
    "model.hidden_dim",
    "model.enc_hidden_dim",
    "model.nheads",
    "model.dec_layers",
    "dataset.num_classes",
    "train.num_gpus",
    "gen_trt_engine.tensorrt.min_batch_size",
    "gen_trt_engine.tensorrt.opt_batch_size",
    "gen_trt_engine.tensorrt.max_batch_size",
}
TRAIN_VALIDATOR = jsonschema.Draft202012Validator(action_schema("train"))
NUMERIC = dict(_numeric_leaves(TRAIN_VALIDATOR.schema["properties"]))


def _with_required_train_data(dotted, value):
    """A train spec with its required data sources and ``value`` at ``dotted`` (num_select 1, so that the
    cross-field rule num_select <= num_queries x num_classes, which no JSON Schema can state, stays satisfied)."""
    data = {"dataset": {"train_data_sources": [{"image_dir": "/i", "json_file": "/j"}]}, "model": {"num_select": 1}}
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return data


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from(sorted(NUMERIC)),
    value=st.one_of(
        st.integers(min_value=-3000, max_value=20000), st.floats(min_value=-10, max_value=10, allow_nan=False)
    ),
)
def test_bounds_agree_between_pydantic_and_schema(key, value):
    """For any number at any numeric key, Pydantic and the JSON Schema accept or reject it together."""
    if NUMERIC[key]["type"] == "integer" and isinstance(value, float):
        value = round(value)
    data = _with_required_train_data(key, value)
    try:
        ExperimentSpec.model_validate(data)
        pydantic_ok = True
    except Exception:
        pydantic_ok = False
    schema_ok = TRAIN_VALIDATOR.is_valid(data)
    assert pydantic_ok == schema_ok, (key, value)


@pytest.mark.parametrize(
    "data",
    [
        {"train": {"optim": {"optimizer": "Adam"}}},
        {"model": {"cross_attn_method": "nearest"}},
        {"train": {"num_epoch": 3}},
        {"model": {"backbone": "fan_medium"}},
        {"dataset": {"train_data_sources": [{"image_dir": "/x"}]}},
    ],
)
def test_rejected_by_both(data):
    with pytest.raises(Exception):  # noqa: B017 - any validation error
        ExperimentSpec.model_validate(data)
    assert not TRAIN_VALIDATOR.is_valid(data)
