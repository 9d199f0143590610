"""``rtdetr automl``: the search space read from the real train schema (property test), the search loop with a
stand-in trial runner (failures, pruning, resume, recovery of interrupted trials, spec errors), and a real search
whose trials are ``rtdetr train`` subprocesses, killed and restarted half-way."""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from test_train import TINY_MODEL

from rtdetr_tao.actions import automl as automl_action
from rtdetr_tao.automl import study as study_module
from rtdetr_tao.automl.space import build_space, dependencies, sample_overrides
from rtdetr_tao.automl.study import STALE_S, Search
from rtdetr_tao.automl.trials import TrialOutcome, run_trial
from rtdetr_tao.cli import main
from rtdetr_tao.commands import ACTIONS
from rtdetr_tao.config import ExperimentSpec, load_spec
from rtdetr_tao.config.experiment import get_path
from rtdetr_tao.data.synthetic import write_split
from rtdetr_tao.errors import DependencyError, SpecError, TrainingError
from rtdetr_tao.outputs.status import StatusLogger

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "train.schema.json").read_text())
BASE = ExperimentSpec.model_validate(
    {"model": {"num_queries": 120, "num_select": 100}, "train": {"num_epochs": 12, "optim": {"lr_steps": [4, 8]}}}
)


def _node(key: str) -> dict[str, Any]:
    node = SCHEMA
    for part in key.split("."):
        node = node["properties"][part]
    return node


def _leaves(node: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for name, child in node.get("properties", {}).items():
        key = f"{prefix}{name}"
        out += _leaves(child, key + ".") if "properties" in child else [key]
    return out


def _searchable(key: str) -> bool:
    try:
        build_space(SCHEMA, [key], _fallback_range(key), lambda k: get_path(BASE, k))
    except SpecError:
        return False
    return True


def _fallback_range(key: str) -> dict[str, list[float]]:
    """A range for the keys the schema leaves unbounded: from the default up to three times it (or +8)."""
    node = _node(key)
    types = {node["type"]} if isinstance(node.get("type"), str) else set(node.get("type", []))
    if not types & {"number", "integer"} or "enum" in node or "maximum" in node or "exclusiveMaximum" in node:
        return {}
    default = node["default"] if node["default"] is not None else node.get("minimum", 1)
    return {key: [default, default * 3 if default > 0 else default + 8]}


SEARCHABLE = sorted(
    key
    for key in _leaves(SCHEMA)
    if key.split(".")[0] in ACTIONS["train"].sections
    and key not in SCHEMA["automl_disabled_parameters"]
    and _searchable(key)
)


def _check_against_schema(key: str, value: Any, values: dict[str, Any], user_range: list[float] | None) -> None:
    """Every condition the schema states for ``key``, checked on the sampled ``value``."""
    node = _node(key)
    cond = node.get("math_cond", "")
    if node.get("depends_on"):
        limit = values[node["depends_on"]]
        for item in value if isinstance(value, list) else [value]:
            assert (item < limit) if cond.startswith("< ") else (item <= limit), (key, value, limit)
        if isinstance(value, list):
            assert value == sorted(set(value)) and value and all(isinstance(v, int) and v >= 0 for v in value)
            return
    if "enum" in node:
        assert value in node["enum"], (key, value)
        return
    if node.get("type") == "boolean":
        assert isinstance(value, bool)
        return
    assert isinstance(value, (int, float)) and not isinstance(value, bool)
    if "integer" in node.get("type", []):
        assert isinstance(value, int), (key, value)
    assert value >= node.get("minimum", -math.inf) and value <= node.get("maximum", math.inf), (key, value)
    assert value > node.get("exclusiveMinimum", -math.inf) and value < node.get("exclusiveMaximum", math.inf)
    if cond.strip() == "^ 2":
        assert value >= 1 and value & (value - 1) == 0, (key, value)
    elif cond.startswith(("> ", ">= ")) and "depends_on" not in cond:
        bound = float(cond.split()[1])
        assert value > bound if cond.startswith("> ") else value >= bound, (key, value)
    hint = user_range or node.get("automl_search_range")
    if hint and not node.get("depends_on"):
        assert hint[0] <= value <= hint[1], (key, value, hint)


def _sample(keys: list[str] | None, seed: int, ranges: dict[str, list[float]]) -> tuple[dict[str, Any], dict]:
    params = build_space(SCHEMA, keys, ranges, lambda k: get_path(BASE, k))
    values = {k: get_path(BASE, k) for k in dependencies(params)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    overrides = sample_overrides(params, study.ask(), values)
    return overrides, {**values, **overrides}


def test_default_space_is_the_schema_default_list() -> None:
    params = build_space(SCHEMA, None, {}, lambda k: get_path(BASE, k))
    assert [p.key for p in params] == SCHEMA["automl_default_parameters"]  # num_queries precedes num_select
    lr = next(p for p in params if p.key == "train.optim.lr")
    assert (lr.low, lr.high, lr.log) == (1e-5, 1e-3, True)
    assert next(p for p in params if p.key == "dataset.batch_size").kind == "pow2"
    assert set(SEARCHABLE) >= set(SCHEMA["automl_default_parameters"]) | {"train.optim.lr_steps", "model.act"}


def test_only_keys_without_a_numeric_or_choice_type_are_left_out() -> None:
    """Every tunable leaf of the train sections is searchable unless it is a string, list or mapping."""
    left_out = [
        key
        for key in _leaves(SCHEMA)
        if key.split(".")[0] in ACTIONS["train"].sections
        and key not in SCHEMA["automl_disabled_parameters"]
        and key not in SEARCHABLE
    ]
    for key in left_out:
        node = _node(key)
        types = {node["type"]} if isinstance(node.get("type"), str) else set(node.get("type", ["union"]))
        assert "enum" not in node and not types & {"number", "integer", "boolean"}, key
    assert len(SEARCHABLE) > 60


optuna.logging.set_verbosity(optuna.logging.WARNING)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), chosen=st.sets(st.sampled_from(SEARCHABLE), min_size=1, max_size=8))
def test_any_searchable_key_is_sampled_inside_its_schema(seed: int, chosen: set[str]) -> None:
    """Random subsets of every searchable key of the real schema (plus num_queries, which num_select depends on):
    each value meets its bounds, enum, math_cond, depends_on and search range."""
    keys = sorted(chosen)
    ranges = {k: r for key in keys for k, r in _fallback_range(key).items()}
    overrides, values = _sample(keys, seed, ranges)
    assert set(overrides) == set(keys)
    for key, value in overrides.items():
        _check_against_schema(key, value, values, ranges.get(key))


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_default_search_always_gives_a_valid_train_spec(seed: int) -> None:
    overrides, values = _sample(None, seed, {})
    for key, value in overrides.items():
        _check_against_schema(key, value, values, None)
    assert overrides["model.num_select"] <= overrides["model.num_queries"]
    data = BASE.model_dump(mode="json", exclude_unset=True)
    for key, value in overrides.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    spec = ExperimentSpec.model_validate(data)
    assert all(get_path(spec, k) == v for k, v in overrides.items())


def test_milestones_stay_below_the_epochs_they_depend_on() -> None:
    for epochs in (1, 2, 5, 40):
        base = ExperimentSpec.model_validate({"train": {"num_epochs": epochs, "optim": {"lr_steps": [1, 2, 3]}}})
        params = build_space(SCHEMA, ["train.optim.lr_steps"], {}, lambda k, b=base: get_path(b, k))
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=epochs))
        for _ in range(20):
            steps = sample_overrides(params, study.ask(), {"train.num_epochs": epochs})["train.optim.lr_steps"]
            assert steps == sorted(set(steps)) and 1 <= len(steps) <= 3 and max(steps) < max(epochs, 1)


def test_option_weights_are_honoured() -> None:
    schema = {
        "properties": {"a": {"properties": {"act": {"enum": ["x", "y", "z"], "option_weights": [0.8, 0.2, 0.0]}}}},
        "automl_default_parameters": ["a.act"],
        "automl_disabled_parameters": [],
    }
    params = build_space(schema, None, {}, lambda k: None)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    draws = [sample_overrides(params, study.ask(), {})["a.act"] for _ in range(400)]
    assert draws.count("z") == 0 and 0.7 < draws.count("x") / 400 < 0.9
    assert params[0].as_params("y", {}) == {"a.act:u": pytest.approx(0.9)}
    fixed = optuna.create_study()
    fixed.enqueue_trial({"a.act:u": 1.0})  # the top of the range never picks the option of weight 0
    assert sample_overrides(params, fixed.ask(), {})["a.act"] == "y"


@pytest.mark.parametrize(
    ("parameters", "ranges", "message"),
    [
        (["train.num_epochs"], {}, "automl_disabled_parameters"),
        (["train.optim.lrr"], {}, "did you mean 'train.optim.lr'"),
        (["train.optim.lr"], {"train.optim.lr": [0.0, 0.1]}, "not inside the schema's bounds \\(0.0, 1.0\\]"),
        (["train.optim.lr"], {"train.optim.weight_decay": [0.0, 0.1]}, "add it to automl.parameters"),
        (["train.clip_grad_norm"], {}, "give one with automl.ranges"),
        (["wandb.project"], {}, "has no search space"),
        (["model.act"], {"model.act": [0, 1]}, "is a choice"),
    ],
)
def test_space_errors_name_the_key_and_the_fix(parameters, ranges, message) -> None:
    with pytest.raises(SpecError, match=message):
        build_space(SCHEMA, parameters, ranges, lambda k: get_path(BASE, k))


def test_automl_spec_rules() -> None:
    spec = load_spec(None, ["automl.metric=mAP50"]).spec.automl
    assert (spec.metric, spec.goal) == ("val_mAP50", "maximize")
    assert load_spec(None, ["automl.metric=val_loss"]).spec.automl.goal == "minimize"
    for override, message in [
        ("automl.ranges={train.optim.lr: [0.001, 0.0001]}", "low <= high"),
        ("automl.parameters=[]", "automl.parameters is empty"),
        ("automl.parameters=[train.optim.lr, train.optim.lr]", "more than once"),
        ("automl.algorithm=grid", "automl.algorithm"),
    ]:
        with pytest.raises(SpecError, match=message):
            load_spec(None, [override])


def test_cli_names_what_automl_needs(tmp_path, capsys) -> None:
    spec = tmp_path / "automl.yaml"
    spec.write_text(yaml.safe_dump({"dataset": {"train_data_sources": [{"image_dir": "a", "json_file": "b"}]}}))
    assert main(["automl", "-e", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "dataset.val_data_sources is required by automl" in err
    assert main(["automl", "-e", str(spec), "automl.parameters=[train.optim.lr]", "automl.algoritm=random"]) == 2
    assert "did you mean 'automl.algorithm'" in capsys.readouterr().err


def test_missing_optuna_gives_the_install_hint(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    out = tmp_path / "automl"
    with pytest.raises(DependencyError, match=r"pip install 'rtdetr-tao\[automl\]'"):
        Search(_spec(tmp_path), out, StatusLogger(out / "status.json", enabled=False), FakeRunner())


# --- the search loop, with a stand-in runner --------------------------------------------------------------------


def _score(overrides: dict[str, Any]) -> float:
    """A smooth stand-in for val_mAP, best at lr = 3e-4."""
    return max(0.0, 0.6 - 0.1 * (math.log10(overrides["train.optim.lr"]) - math.log10(3e-4)) ** 2)


class FakeRunner:
    """Reads the trial's spec like a real run would, reports a per-epoch metric, fails on batch size 16."""

    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, spec_path: Path, trial_dir: Path, metric: str, report) -> TrialOutcome:
        self.calls.append(trial_dir)
        spec = load_spec(spec_path, action="train").spec
        assert spec.results_dir == str(trial_dir)
        overrides = {"train.optim.lr": spec.train.optim.lr}
        if spec.dataset.batch_size == 16:
            return TrialOutcome("FAIL", None, 0.1, 0, "exit code 2: rtdetr: error: out of memory")
        final = _score(overrides)
        epochs = spec.train.num_epochs
        for epoch in range(1, epochs + 1):
            value = final * epoch / epochs
            if report(epoch, value) and epoch < epochs:
                return TrialOutcome("PRUNED", value, 0.1, epoch)
        return TrialOutcome("COMPLETE", final, 0.1, epochs)


def _spec(tmp_path: Path, model: dict | None = None, **automl: Any) -> ExperimentSpec:
    data = {
        "results_dir": str(tmp_path / "results"),
        "model": model or {},
        "dataset": {
            "train_data_sources": [{"image_dir": "train", "json_file": "train.json"}],
            "val_data_sources": {"image_dir": "val", "json_file": "val.json"},
        },
        "train": {"num_epochs": 9},
        "automl": {"parameters": ["train.optim.lr", "dataset.batch_size"], "num_trials": 6, "seed": 1, **automl},
    }
    return ExperimentSpec.model_validate(data)


def test_search_records_failures_and_goes_on(tmp_path) -> None:
    spec = _spec(tmp_path, algorithm="random", enqueue_trials=[{"dataset.batch_size": 16, "train.optim.lr": 1e-4}])
    runner = FakeRunner()
    best_path = automl_action.run(spec, runner=runner)
    out = tmp_path / "results" / "automl"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["trial"] for r in rows] == [str(i) for i in range(6)] and len(runner.calls) == 6
    assert rows[0]["state"] == "FAIL" and "out of memory" in rows[0]["error"]
    assert rows[0]["dataset.batch_size"] == "16" and rows[0]["train.optim.lr"] == "0.0001"
    done = [r for r in rows if r["state"] == "COMPLETE"]
    best = max(done, key=lambda r: float(r["val_mAP"]))
    results = json.loads((out / "results.json").read_text())
    assert results["best_trial"] == int(best["trial"]) and results["direction"] == "maximize"
    best_spec = load_spec(best_path, action="train").spec
    assert best_spec.results_dir == spec.results_dir and best_spec.automl == ExperimentSpec().automl
    assert best_spec.train.optim.lr == pytest.approx(float(best["train.optim.lr"]), rel=1e-12)
    assert best_spec.dataset.batch_size == int(best["dataset.batch_size"])
    for name in ("metric_over_trials.png", "parameter_importance.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    status = [json.loads(line) for line in (out / "status.json").read_text().splitlines()]
    assert [s["status"] for s in status] == ["STARTED"] + ["RUNNING"] * 6 + ["SUCCESS"]
    assert status[-1]["kpi"]["best_val_mAP"] == pytest.approx(float(best["val_mAP"]))
    trial = load_spec(out / "trial_003" / "spec.yaml", action="train").spec
    assert trial.train.plots is False and best_spec.train.plots is True  # no report per trial; the best run has one


def test_hyperband_prunes_weak_trials(tmp_path) -> None:
    spec = _spec(tmp_path, algorithm="hyperband", num_trials=12, ranges={"dataset.batch_size": [2, 8]})
    automl_action.run(spec, runner=FakeRunner())
    rows = json.loads((tmp_path / "results" / "automl" / "results.json").read_text())["trials"]
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned and all(r["epochs"] < 9 for r in pruned)
    assert any(r["state"] == "COMPLETE" and r["epochs"] == 9 for r in rows)


def test_no_completed_trial_is_an_error_after_the_table(tmp_path) -> None:
    spec = _spec(tmp_path, num_trials=2, parameters=["dataset.batch_size"], ranges={"dataset.batch_size": [16, 16]})
    with pytest.raises(TrainingError, match="no trial of the study completed .*out of memory"):
        automl_action.run(spec, runner=FakeRunner())
    assert len(list(csv.DictReader((tmp_path / "results" / "automl" / "results.csv").open()))) == 2


def test_sampled_values_that_break_a_cross_field_rule_fail_without_a_run(tmp_path) -> None:
    spec = _spec(
        tmp_path,
        model={"eval_idx": 2},
        num_trials=3,
        parameters=["model.dec_layers"],
        ranges={"model.dec_layers": [1, 2]},
    )
    runner = FakeRunner()
    with pytest.raises(TrainingError, match="eval_idx"):
        automl_action.run(spec, runner=runner)
    assert runner.calls == []


def test_search_resumes_the_same_study_and_requeues_interrupted_trials(tmp_path) -> None:
    out = tmp_path / "results" / "automl"
    out.mkdir(parents=True)
    status = StatusLogger(out / "status.json")
    first = Search(_spec(tmp_path, num_trials=2), out, status, FakeRunner()).run()
    before = {t.number: t.params for t in first.trials}
    # a worker of this machine died during trial 2: RUNNING, with a pid that no longer exists
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = first.ask()
    orphan.suggest_float("train.optim.lr", 1e-5, 1e-3, log=True)
    orphan.suggest_categorical("dataset.batch_size", [2, 4, 8, 16])
    orphan.set_user_attr("worker", {"host": socket.gethostname(), "pid": dead.pid})
    runner = FakeRunner()
    search = Search(_spec(tmp_path, num_trials=4), out, status, runner)
    study = search.run()
    trials = study.trials
    assert {t.number: t.params for t in trials[:2]} == before  # the earlier trials are kept, not re-run
    assert trials[2].state.name == "FAIL" and trials[3].user_attrs["retry_of"] == 2
    assert trials[3].params == trials[2].params
    assert len(trials) == 5 and search.counted() == 4 and len(runner.calls) == 2  # the retry and one new trial
    with pytest.raises(SpecError, match="optimises val_mAP"):
        Search(_spec(tmp_path, metric="val_loss"), out, status, FakeRunner())
    with pytest.raises(SpecError, match="automl.storage: cannot open 'sqlite:////nonexistent/dir/x.db'"):
        Search(_spec(tmp_path, storage="sqlite:////nonexistent/dir/x.db"), out, status, FakeRunner())
    with pytest.raises(SpecError, match=r"cannot open 'postgresql://me:\*\*\*@db/x'") as error:
        Search(_spec(tmp_path, storage="postgresql://me:s3cret@db/x"), out, status, FakeRunner())
    assert "s3cret" not in str(error.value)
    with pytest.raises(SpecError, match="export.opset_version is not read by rtdetr train"):
        Search(_spec(tmp_path, parameters=["export.opset_version"]), out, status, FakeRunner())


class SlowRunner(FakeRunner):
    def __call__(self, spec_path: Path, trial_dir: Path, metric: str, report) -> TrialOutcome:
        time.sleep(0.3)
        return super().__call__(spec_path, trial_dir, metric, report)


def _worker(tmp_path: Path, seed: int) -> None:
    out = tmp_path / "results" / "automl"
    spec = _spec(tmp_path, num_trials=8, algorithm="random", seed=seed)
    Search(spec, out, StatusLogger(out / "status.json", enabled=False), SlowRunner()).run()


def test_two_workers_share_one_study(tmp_path) -> None:
    (tmp_path / "results" / "automl").mkdir(parents=True)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(tmp_path, seed)) for seed in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    study = optuna.load_study(study_name="rtdetr_automl", storage=f"sqlite:///{tmp_path / 'results/automl/study.db'}")
    trials = study.trials
    assert 8 <= len(trials) <= 9  # two workers may both start the last trial
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)
    assert len({t.params["train.optim.lr"] for t in trials}) == len(trials)  # the workers drew different values
    assert {t.user_attrs["worker"]["pid"] for t in trials} == {w.pid for w in workers}
    assert sorted(p.name for p in (tmp_path / "results" / "automl").glob("trial_*")) == [
        f"trial_{t.number:03d}" for t in trials
    ]


def test_timeout_stops_starting_trials(tmp_path, caplog) -> None:
    caplog.set_level("INFO")
    out = tmp_path / "results" / "automl"
    out.mkdir(parents=True)
    search = Search(_spec(tmp_path, timeout=0.1), out, StatusLogger(out / "s.json", enabled=False), SlowRunner())
    study = search.run()
    assert len(study.trials) == 1 and study.trials[0].state.name == "COMPLETE"  # the running trial finishes
    assert "timeout of 0.1 s reached" in caplog.text


# --- a real search: trials are rtdetr train subprocesses ----------------------------------------------------------


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("shapes")
    return {
        "train": write_split(root / "train", 16, size=(64, 64), seed=0),
        "val": write_split(root / "val", 4, size=(64, 64), seed=1),
    }


def _real_spec(tmp_path: Path, shapes: dict) -> Path:
    source = lambda split: {"image_dir": str(split.image_dir), "json_file": str(split.json_file)}  # noqa: E731
    spec = {
        "results_dir": str(tmp_path / "results"),
        "model": TINY_MODEL,
        "dataset": {
            "train_data_sources": [source(shapes["train"])],
            "val_data_sources": source(shapes["val"]),
            "num_classes": 4,
            "batch_size": 4,
            "workers": 0,
            "augmentation": {"train_spatial_size": [64, 64], "eval_spatial_size": [64, 64], "multi_scales": [64]},
        },
        "train": {
            "num_epochs": 1,
            "device": "cpu",
            "seed": 3,
            "optim": {"warmup_steps": 2},
            "checkpoint_interval": 2,
            "checkpoint_interval_unit": "step",
        },
        "automl": {
            "algorithm": "random",
            "num_trials": 3,
            "parameters": ["train.optim.lr", "dataset.batch_size"],
            "ranges": {"dataset.batch_size": [2, 32], "train.optim.lr": [1e-4, 1e-3]},
            # 16 training images give no batch of 32: the first trial's training fails; the second has 8 steps
            "enqueue_trials": [
                {"dataset.batch_size": 32, "train.optim.lr": 2e-4},
                {"dataset.batch_size": 2, "train.optim.lr": 3e-4},
            ],
        },
    }
    path = tmp_path / "automl.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_real_search_survives_a_failed_trial_and_a_kill(tmp_path, shapes) -> None:
    spec_path = _real_spec(tmp_path, shapes)
    out = tmp_path / "results" / "automl"
    command = [sys.executable, "-m", "rtdetr_tao.cli", "automl", "-e", str(spec_path)]
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "trial_001" / "train" / "rtdetr_model_latest.pth").exists():  # trial 1 saved a checkpoint
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline, "trial 1 wrote no checkpoint"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the search and its trial die together
    first.wait()

    assert subprocess.run(command, capture_output=True, text=True).returncode == 0

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["state"] for r in rows[:2]] == ["FAIL", "FAIL"] and len(rows) == 4
    assert rows[0]["dataset.batch_size"] == "32" and "no full batch of 32" in rows[0]["error"]
    assert rows[1]["error"] == "interrupted; retried as trial 2"
    specs = [yaml.safe_load((out / f"trial_{i:03d}" / "spec.yaml").read_text()) for i in range(4)]
    assert specs[2]["dataset"]["batch_size"] == specs[1]["dataset"]["batch_size"]
    assert specs[2]["train"]["optim"]["lr"] == specs[1]["train"]["optim"]["lr"]
    resumed = Path(specs[2]["train"]["resume_training_checkpoint_path"])  # the retry goes on from trial 1's checkpoint
    assert (
        resumed.parent == out / "trial_001" / "train"
        and "resuming from" in (out / "trial_002" / "train.log").read_text()
    )
    assert "resume_training_checkpoint_path" not in specs[3]["train"]
    assert json.loads((out / "results.json").read_text())["trials"][2]["resumed_from"] == str(resumed)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert complete, rows
    for row in complete:  # the metric is the one the trial's own training reported
        records = [json.loads(x) for x in (out / f"trial_{int(row['trial']):03d}" / "train" / "status.json").open()]
        assert float(row["val_mAP"]) == pytest.approx([r for r in records if "kpi" in r][-1]["kpi"]["val_mAP"])
    best = max(complete, key=lambda r: float(r["val_mAP"]))
    loaded = load_spec(out / "best_spec.yaml", action="train").spec
    assert loaded.results_dir == str(tmp_path / "results") and loaded.model.hidden_dim == TINY_MODEL["hidden_dim"]
    assert loaded.dataset.batch_size == int(best["dataset.batch_size"])
    assert (out / "metric_over_trials.png").stat().st_size > 1000
    results = json.loads((out / "results.json").read_text())
    assert results["best_trial"] == int(best["trial"])
    assert results["best_train_dir"] == str(out / f"trial_{int(best['trial']):03d}" / "train")
    assert Path(results["best_checkpoint"]).parent == Path(results["best_train_dir"])
    assert Path(results["best_checkpoint"]).name in ("model_best.pth", "rtdetr_model_latest.pth")


@pytest.mark.parametrize("epochs", [30, 1])
def test_run_trial_stops_a_pruned_training_run(tmp_path, shapes, epochs) -> None:
    """Told to prune after its first epoch, a 30-epoch run is stopped; a 1-epoch run has completed by then."""
    spec = yaml.safe_load(_real_spec(tmp_path, shapes).read_text())
    del spec["automl"]
    spec["results_dir"] = str(tmp_path / "trial")
    spec["train"]["num_epochs"] = epochs
    (tmp_path / "trial").mkdir()
    spec_path = tmp_path / "trial" / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    reports: list[tuple[int, float]] = []
    outcome = run_trial(
        spec_path,
        tmp_path / "trial",
        "val_mAP",
        lambda epoch, value: reports.append((epoch, value)) or True,
        poll_s=0.1,
    )
    assert outcome.epochs == 1 and reports[0][0] == 1
    records = [json.loads(x) for x in (tmp_path / "trial" / "train" / "status.json").open()]
    if epochs == 1:
        assert outcome.state == "COMPLETE" and records[-1]["status"] == "SUCCESS"
        assert outcome.value == records[-2]["kpi"]["val_mAP"]
    else:
        assert outcome.state == "PRUNED" and records[-1]["status"] != "SUCCESS"
        assert max(r.get("epoch", 0) for r in records) < 29


def test_trials_of_other_machines_are_recovered_when_their_heartbeat_is_stale(tmp_path) -> None:
    out = tmp_path / "results" / "automl"
    out.mkdir(parents=True)
    status = StatusLogger(out / "status.json", enabled=False)
    study = Search(_spec(tmp_path, algorithm="random"), out, status, FakeRunner()).study
    for age in (STALE_S + 60, 30):  # trial 0: silent for 11 minutes; trial 1: beat 30 s ago
        trial = study.ask()
        trial.suggest_float("train.optim.lr", 1e-5, 1e-3, log=True)
        trial.set_user_attr("worker", {"host": "other-node", "pid": 1, "seed": 0})
        trial.set_user_attr("heartbeat", time.time() - age)
    trials = Search(_spec(tmp_path, algorithm="random"), out, status, FakeRunner()).study.trials
    assert [t.state.name for t in trials] == ["FAIL", "RUNNING", "WAITING"] and trials[2].user_attrs["retry_of"] == 0


def test_a_running_trial_records_heartbeats(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(study_module, "HEARTBEAT_S", 0.05)
    out = tmp_path / "results" / "automl"
    out.mkdir(parents=True)
    search = Search(_spec(tmp_path, num_trials=1), out, StatusLogger(out / "s.json", enabled=False), SlowRunner())
    started = time.time()
    trial = search.run().trials[0]
    assert trial.state.name == "COMPLETE" and started + 0.1 < trial.user_attrs["heartbeat"] <= time.time()


def test_a_second_worker_with_the_same_seed_draws_other_values(tmp_path, caplog) -> None:
    out = tmp_path / "results" / "automl"
    out.mkdir(parents=True)
    status = StatusLogger(out / "status.json", enabled=False)
    first = Search(_spec(tmp_path, algorithm="random"), out, status, FakeRunner())
    running = first.study.ask()
    running.suggest_float("train.optim.lr", 1e-5, 1e-3, log=True)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        running.set_user_attr("worker", {"host": socket.gethostname(), "pid": other.pid, "seed": 1})
        second = Search(_spec(tmp_path, algorithm="random"), out, status, FakeRunner())
        assert "uses automl.seed=1; this worker adds its pid" in caplog.text
        assert second.study.trials[running.number].state.name == "RUNNING"  # a live worker's trial is left alone
        caplog.clear()
        Search(_spec(tmp_path, algorithm="random", seed=2), out, status, FakeRunner())
        assert "adds its pid" not in caplog.text  # its own seed: nothing to change
        other.kill()
