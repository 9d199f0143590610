"""TAO's own code drives ours: tao-core's generated RT-DETR specs and its ``validate_jsonschema``, and
tao_automl's search-space extraction, search algorithms, status-file reader and skill-bank validation.

nvidia-tao-core and nvidia-tao-automl pin versions of torchao, requests, setuptools, pydantic, ... that this
environment must not take, so .ci/run installs them with ``--no-deps`` (tests/requirements-tao.txt); the few
libraries their code imports (pandas, scikit-learn, omegaconf) are test extras. Without them these tests skip.
"""

from __future__ import annotations

import copy
import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from rtdetr_tao.cli import main as rtdetr
from rtdetr_tao.commands import SPEC_ACTIONS
from rtdetr_tao.config import load_spec
from rtdetr_tao.config.schema import action_schema, find_node, schema_types
from rtdetr_tao.config.tao_skill import SKILL_ACTIONS, skill_schema
from rtdetr_tao.errors import SpecError
from rtdetr_tao.outputs.status import StatusLogger

NEEDS = "nvidia-tao-core / nvidia-tao-automl are not installed (pip install --no-deps -r tests/requirements-tao.txt)"
DATA = {"image_dir": "/data/train/images.tar.gz", "json_file": "/data/train/annotations.json"}
CHECKPOINT = "/results/train/model_epoch_009.pth"

# What each TAO action needs filled in before it runs (TAO's defaults leave these '' or '???').
FILLED: dict[str, tuple[str, dict[str, Any]]] = {
    "train": ("train", {"dataset.train_data_sources": [DATA], "dataset.val_data_sources": DATA}),
    "distill": (
        "distill",
        {"dataset.train_data_sources": [DATA], "distill": {"pretrained_teacher_model_path": CHECKPOINT}},
    ),
    "evaluate": ("evaluate", {"dataset.test_data_sources": DATA, "evaluate.checkpoint": CHECKPOINT}),
    "inference": (
        "inference",
        {"dataset.infer_data_sources": {"image_dir": [DATA["image_dir"]]}, "inference.checkpoint": CHECKPOINT},
    ),
    "export": ("export", {"export.checkpoint": CHECKPOINT, "export.onnx_file": "/results/model.onnx"}),
    "quantize": ("quantize", {"dataset.quant_calibration_data_sources": DATA, "quantize.model_path": CHECKPOINT}),
    "gen_trt_engine": (
        "gen_trt_engine",
        {
            "gen_trt_engine.onnx_file": "/results/model.onnx",
            "gen_trt_engine.trt_engine": "/results/model.engine",
            "gen_trt_engine.tensorrt.calibration": {"cal_image_dir": [DATA["image_dir"]], "cal_cache_file": ""},
        },
    ),
}
SLOW = pytest.mark.slow  # Gaussian-process fits: about 3 minutes for 50 recommendations on 2 cores
ALGORITHMS = [
    pytest.param("bayesian", marks=SLOW),
    "hyperband",
    pytest.param("bfbo", marks=SLOW),
    "bohb",
    "asha",
    "dehb",
    "pbt",
    "hyperband_es",
]
"""tao_automl's algorithms that need no LLM."""


def _tao_default(action: str) -> dict[str, Any]:
    generate = pytest.importorskip("nvidia_tao_core.scripts.generate_schema", reason=NEEDS).generate_schema
    return copy.deepcopy(generate("rtdetr", action)["default"])


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


# --- tao-core: TAO's generated specs load unchanged ---------------------------------------------------------------


@pytest.mark.parametrize("tao_action", list(FILLED))
def test_tao_core_default_spec_loads(tmp_path: Path, tao_action: str) -> None:
    """tao-core's generated default spec of every RT-DETR action, with its paths filled in, loads as TAO wrote it:
    model_name '', '' for unused paths, model.frozen_fm, train.checkpointer, quantize.backend torchao, ..."""
    data = _tao_default(tao_action)
    assert data["model_name"] == "" and data["quantize"]["backend"] == "torchao" and "frozen_fm" in data["model"]
    action, filled = FILLED[tao_action]
    for key, value in filled.items():
        _set(data, key, value)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path, action=action).spec
    assert spec.model_name == "rtdetr"
    assert spec.quantize.backend == "torchao" and spec.model.frozen_fm.enabled is False
    assert spec.train.resume_training_checkpoint_path is None and spec.train.pretrained_model_path is None
    if action != "evaluate":
        assert spec.dataset.test_data_sources is None  # {image_dir: '', json_file: ''}: unset
    if action != "quantize":
        assert spec.dataset.quant_calibration_data_sources is None
    assert spec.results_dir == "results"  # '' keeps the default


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("model.frozen_fm.enabled", "model.frozen_fm.enabled: not supported"),
        ("train.checkpointer.enable_topk", "train.checkpointer.enable_topk=true is not supported"),
        ("export.serialize_nvdsinfer", "export.serialize_nvdsinfer=true (DeepStream config files) is not supported"),
        ("inference.is_internal", "inference.is_internal=true (TAO's internal output layout) is not supported"),
    ],
)
def test_tao_switches_we_do_not_build_are_one_line_errors(tmp_path: Path, key: str, message: str) -> None:
    data = _tao_default("train")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as caught:
        load_spec(path, [f"{key}=true"])
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("action", SPEC_ACTIONS)
def test_tao_core_validate_jsonschema_accepts_our_default_spec(repo_root: Path, action: str) -> None:
    """tao-core's API validator reads only scalar anyOf branches and single types; our schemas suit it."""
    validation = pytest.importorskip("nvidia_tao_core.api_utils.json_schema_validation", reason=NEEDS)
    schema = json.loads((repo_root / "schemas" / f"{action}.schema.json").read_text())
    assert validation.validate_jsonschema(schema["default"], schema["properties"]) is None
    spec = {"train": {"optim": {"lr": 2e-4, "lr_backbone": 2e-5}}, "dataset": {"augmentation": {}}}
    spec["dataset"]["augmentation"]["multi_scales"] = [[480, 832], [544, 960]]
    assert validation.validate_jsonschema(spec, schema["properties"]) is None
    too_big = {"train": {"optim": {"lr": 2.0}}}  # its bounds are read: lr is a "number" with minimum/maximum
    assert "lr should be <= 1.0" in validation.validate_jsonschema(too_big, schema["properties"])


# --- schema facts TAO's readers rely on (no TAO package needed) ---------------------------------------------------


def _leaves(props: dict[str, Any], prefix: str = ""):
    for name, node in props.items():
        yield f"{prefix}{name}", node
        if "properties" in node:
            yield from _leaves(node["properties"], f"{prefix}{name}.")


def test_schema_states_bounds_and_types_the_way_tao_reads_them() -> None:
    schema = action_schema("train")
    for key, node in _leaves(schema["properties"]):
        if "exclusiveMinimum" in node:
            assert node["minimum"] == node["exclusiveMinimum"] and node["math_cond"].startswith(">"), key
        if "exclusiveMaximum" in node:
            assert node["maximum"] == node["exclusiveMaximum"], key
        scalar = [t for t in schema_types(node) if t in ("string", "number", "integer", "boolean")]
        assert not isinstance(node.get("type"), list) or not scalar, f"{key}: nullable scalars use anyOf"
    for key in schema["automl_default_parameters"]:
        node = find_node(schema, key)
        assert [t for t in schema_types(node) if t != "null"] in (["number"], ["integer"]), key
        assert isinstance(node["minimum"], (int, float)) and isinstance(node["maximum"], (int, float)), key
    decay = find_node(schema, "train.ema.decay")
    assert (decay["minimum"], decay["maximum"], decay["math_cond"]) == (0.0, 1.0, "> 0.0")
    lr = find_node(schema, "train.optim.lr")
    assert (lr["minimum"], lr["maximum"], lr["exclusiveMinimum"], lr["math_cond"]) == (0.0, 1.0, 0.0, "> 0.0")
    assert "null" not in json.dumps(schema["default"])
    ranges = schema["custom_param_ranges"]
    assert ranges["dataset.batch_size"] == {"valid_min": 2, "valid_max": 16}
    assert ranges["train.optim.lr_step_size"] == {"valid_min": 1, "valid_max": 100}
    assert ranges["train.optim.weight_decay"] == {"valid_min": 1e-5, "valid_max": 1e-2}
    for window in ranges.values():  # TAO nudges a value on a bound by a tenth of it: the nudge stays inside
        low, high = window["valid_min"], window["valid_max"]
        assert low * 1.1 <= high and high * 0.9 >= low


def test_the_loader_keeps_the_exclusive_rules(tmp_path: Path) -> None:
    for override in ("train.optim.lr=0", "train.ema.decay=1.0", "train.ema.decay=0"):
        with pytest.raises(SpecError, match="greater than 0|less than 1"):
            load_spec(None, [override])


def test_empty_strings_mean_unset() -> None:
    spec = load_spec(
        None,
        [
            "model_name=''",
            "dataset.test_data_sources={image_dir: '', json_file: ''}",
            "dataset.infer_data_sources={image_dir: [''], classmap: ''}",
            "train.pretrained_model_path=''",
        ],
    ).spec
    assert spec.model_name == "rtdetr" and spec.dataset.test_data_sources is None
    assert spec.dataset.infer_data_sources is None and spec.train.pretrained_model_path is None
    with pytest.raises(SpecError, match="json_file is missing"):
        load_spec(None, ["dataset.val_data_sources={image_dir: /data/val, json_file: ''}"])


# --- tao_automl: search space, algorithms, status reader, skill bank -----------------------------------------------


@pytest.fixture(scope="module")
def train_schema(repo_root: Path) -> dict[str, Any]:
    return json.loads((repo_root / "schemas" / "train.schema.json").read_text())


def _base_spec(schema: dict[str, Any]) -> dict[str, Any]:
    base = copy.deepcopy(schema["default"])
    base["dataset"]["train_data_sources"] = [DATA]
    base["dataset"]["val_data_sources"] = DATA
    return base


def test_tao_search_space_takes_every_default_parameter(train_schema: dict[str, Any]) -> None:
    params = pytest.importorskip("tao_automl.search_space.params", reason=NEEDS)
    records, names = params.generate_hyperparams_to_search(
        network="rtdetr", action="train", train_specs=_base_spec(train_schema), automl_hyperparameters=[],
        schema=train_schema,
    )  # fmt: skip
    assert sorted(names) == sorted(train_schema["automl_default_parameters"])
    for record in records:  # numbers with both bounds: no '' for DEHB to compare with
        assert record["value_type"] in ("float", "integer"), record
        assert isinstance(record["valid_min"], (int, float)) and isinstance(record["valid_max"], (int, float))


def _recommendations(schema: dict[str, Any], algorithm: str, count: int, workspace: Path) -> list[dict[str, Any]]:
    """``count`` recommendations of ``algorithm`` over our schema and its search windows, each answered with a
    made-up metric so that the search goes on."""
    automl = pytest.importorskip("tao_automl", reason=NEEDS)
    numpy = pytest.importorskip("numpy")
    numpy.random.seed(0)
    random.seed(0)
    search = automl.AutoML(
        workspace=str(workspace),
        network="rtdetr",
        train_specs=_base_spec(schema),
        settings={
            "algorithm": algorithm,
            "metric": "val_mAP",
            "automl_max_recommendations": count,
            "automl_max_epochs": 27,
        },
        custom_param_ranges=schema["custom_param_ranges"],
        search_schema=schema,
    )
    out: list[dict[str, Any]] = []
    for _ in range(20 * count):
        if len(out) >= count or search.is_complete():
            break
        for rec in search.next_recommendation():
            out.append(dict(rec.specs))
            search.report_result(rec.id, float(numpy.random.rand()))
    return out[:count]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_tao_recommendations_pass_train_dry_run(
    train_schema: dict[str, Any], tmp_path: Path, algorithm: str, capsys
) -> None:
    """50 recommendations of each of tao_automl's non-LLM algorithms: every one is a valid train spec, inside
    the search windows; the first goes through the real CLI's --dry-run as well."""
    logging.getLogger("tao_automl").setLevel(logging.WARNING)
    recs = _recommendations(train_schema, algorithm, 50, tmp_path / "ws")
    assert len(recs) == 50
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(_base_spec(train_schema)))
    windows = train_schema["custom_param_ranges"]
    refused = []
    for rec in recs:
        overrides = [f"{key}={json.dumps(value)}" for key, value in rec.items()]
        try:
            load_spec(base, overrides, action="train")
        except SpecError as exc:
            refused.append(str(exc))
        for key, value in rec.items():
            # a depends_on key is left out: TAO bounds it by its dependency's value, and PBT's perturbations do not
            if key in windows and not find_node(train_schema, key).get("depends_on"):
                assert windows[key]["valid_min"] <= value <= windows[key]["valid_max"], (key, value)
    assert not refused, refused[:3]
    overrides = [f"{key}={json.dumps(value)}" for key, value in recs[0].items()]
    assert rtdetr(["train", "-e", str(base), *overrides, "--dry-run"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["optim"]["lr"] == pytest.approx(recs[0]["train.optim.lr"])


def test_tao_status_reader_reads_our_val_map(tmp_path: Path) -> None:
    """The runner's status-file extractor reads the last validation's val_mAP from train/status.json as our
    training writes it (StatusLogger, TAO's JSON-lines events)."""
    runner = pytest.importorskip("tao_automl.runner", reason=NEEDS)
    path = tmp_path / "train" / "status.json"
    path.parent.mkdir()
    status = StatusLogger(path)
    status.log("STARTED", "Starting Training")
    status.log(epoch=0, max_epoch=2, kpi={"val_mAP": 0.125, "val_mAP50": 0.25, "val_loss": 1.5})
    status.log(epoch=1, max_epoch=2, kpi={"val_mAP": 0.375, "val_mAP50": 0.5, "val_loss": 1.0})
    status.log("SUCCESS", "Training finished")
    assert runner._extract_metric_from_status_file(path, "val_mAP") == 0.375
    assert runner._extract_metric_from_status_file(path, "val_loss") == 1.0


def test_skill_directory_passes_tao_skill_context(tmp_path: Path) -> None:
    """``rtdetr default_specs --skill`` writes TAO's skill-bank layout; tao_automl's SkillContext loads every
    action, validates the schema and the template against each other, and finds the python_script."""
    runner = pytest.importorskip("tao_automl.runner", reason=NEEDS)
    root = tmp_path / "rtdetr"
    assert rtdetr(["default_specs", f"results_dir={root}", "--skill"]) == 0
    for action in SKILL_ACTIONS:
        context = runner.SkillContext(skill_dir=root, action=action)
        assert context.execution is not None and context.execution.script == root / "scripts" / "rtdetr_job.py"
        assert context.validate_runtime()["parameter_count"] > 50
        assert context.default_specs == skill_schema(action)["default"]
    train = runner.SkillContext(skill_dir=root, action="train")
    for key in train.schema["automl_default_parameters"]:
        node = find_node(train.schema, key)
        window = train.schema["custom_param_ranges"].get(key)
        if window:
            assert node["minimum"] <= window["valid_min"] and node["maximum"] >= window["valid_max"]
            assert node["maximum"] <= max(window["valid_max"], node.get("default") or 0)
