"""The search loop: a persistent Optuna study whose trials are ``rtdetr train`` runs.

The study lives in ``automl.storage`` (SQLite in ``results_dir/automl/study.db`` by default), so a
search that stops (kill, reboot, timeout) goes on where it was when started again with the same
spec, and several workers given one database URL share one study. A trial left RUNNING by a
worker of this machine that no longer exists is marked failed and queued again with the same
values; the retry records ``retry_of`` and resumes from the interrupted run's latest checkpoint.
A worker is gone when its process is (same machine) or when its trial's heartbeat is older than
``STALE_S`` (another machine; clocks are assumed to agree to within minutes).
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from ..commands import ACTIONS
from ..config import ExperimentSpec, load_spec
from ..config.experiment import get_path
from ..config.loader import apply_override
from ..config.schema import action_schema
from ..errors import RTDETRError, SpecError, require
from ..io import atomic_write_text
from ..outputs.status import StatusLogger
from ..progress import Progress
from .space import Param, build_space, dependencies, sample_overrides
from .trials import TrialOutcome, TrialRunner, run_trial

log = logging.getLogger(__name__)

HEARTBEAT_S = 60.0
"""A running trial's worker records the time this often (user attribute ``heartbeat``)."""
STALE_S = 600.0
"""A trial of another machine whose heartbeat is older than this is taken as interrupted."""


def trial_spec(base: dict[str, Any], overrides: dict[str, Any], results_dir: str) -> dict[str, Any]:
    """The train spec of one trial (or the best spec): ``base`` with ``overrides`` and its own results_dir."""
    data = copy.deepcopy(base)
    data.pop("automl", None)
    data.get("train", {}).pop("results_dir", None)  # every trial writes under its own folder
    data["results_dir"] = results_dir
    for key, value in overrides.items():
        apply_override(data, key, value, f"{key}={value!r}")
    return data


def trial_dir(out_dir: Path, number: int) -> Path:
    """Where trial ``number`` runs: ``out_dir/trial_NNN``."""
    return out_dir / f"trial_{number:03d}"


def best_checkpoint(train_dir: Path) -> Path | None:
    """The trial's ``model_best.pth``, else its latest checkpoint, else None."""
    for name in ("model_best.pth", "rtdetr_model_latest.pth"):
        if (train_dir / name).exists():
            return train_dir / name
    return None


def base_spec(spec: ExperimentSpec) -> dict[str, Any]:
    """What the user set (file and overrides, references resolved), as plain data; defaults stay implicit."""
    return spec.model_dump(mode="json", exclude_unset=True)


class Search:
    """One worker of a study. ``runner`` runs a trial (:func:`run_trial`, or a stand-in in tests)."""

    def __init__(self, spec: ExperimentSpec, out_dir: Path, status: StatusLogger, runner: TrialRunner = run_trial):
        self.optuna = require("optuna", extra="automl", purpose="rtdetr automl")
        self.optuna.logging.set_verbosity(self.optuna.logging.WARNING)  # trials are logged by us, one line each
        self.spec, self.cfg, self.out_dir, self.status, self.runner = spec, spec.automl, out_dir, status, runner
        schema = action_schema("train")
        for key in self.cfg.parameters or ():
            if key.split(".")[0] not in ACTIONS["train"].sections:
                raise SpecError(
                    f"automl.parameters: {key} is not read by rtdetr train, so searching it changes nothing; search "
                    f"keys of {', '.join(s for s in ACTIONS['train'].sections if s != 'results_dir')}"
                )
        self.params: list[Param] = build_space(
            schema, self.cfg.parameters, self.cfg.ranges, lambda key: get_path(spec, key)
        )
        self.values = {key: get_path(spec, key) for key in dependencies(self.params)}
        self.base = base_spec(spec)
        if self.cfg.algorithm == "hyperband" and self.cfg.hyperband_min_epochs > spec.train.num_epochs:
            raise SpecError(
                f"automl.hyperband_min_epochs={self.cfg.hyperband_min_epochs} exceeds train.num_epochs="
                f"{spec.train.num_epochs}; lower it or train longer"
            )
        self.study = self._open_study()

    @property
    def storage_url(self) -> str:
        return self.cfg.storage or f"sqlite:///{(self.out_dir / 'study.db').resolve()}"

    @property
    def storage_shown(self) -> str:
        """The storage URL with any password masked, for logs, errors and results.json."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return make_url(self.storage_url).render_as_string(hide_password=True)
        except ArgumentError:
            return "<unparsable storage URL>"

    def _open_study(self) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        optuna = self.optuna
        pruner = (
            optuna.pruners.HyperbandPruner(
                min_resource=self.cfg.hyperband_min_epochs,
                max_resource=self.spec.train.num_epochs,
                reduction_factor=self.cfg.hyperband_reduction_factor,
            )
            if self.cfg.algorithm == "hyperband"
            else optuna.pruners.NopPruner()
        )
        try:
            study = optuna.create_study(
                storage=self._storage(),
                study_name=self.cfg.study_name,
                direction=self.cfg.goal,
                pruner=pruner,
                load_if_exists=True,
            )
        except (ImportError, ValueError, SQLAlchemyError) as exc:  # a bad URL, a missing driver, no server
            reason = str(exc).replace(self.storage_url, self.storage_shown).splitlines()[0]
            raise SpecError(f"automl.storage: cannot open '{self.storage_shown}': {reason}") from None
        direction = study.direction.name.lower()
        recorded = study.user_attrs.get("metric")
        if direction != self.cfg.goal or (recorded is not None and recorded != self.cfg.metric):
            raise SpecError(
                f"study '{self.cfg.study_name}' in {self.storage_shown} optimises {recorded or '?'} ({direction}), "
                f"not {self.cfg.metric} ({self.cfg.goal}); use another automl.study_name or results_dir"
            )
        keys = [p.key for p in self.params]
        if recorded is None:
            study.set_user_attr("metric", self.cfg.metric)
            study.set_user_attr("parameters", keys)
        elif study.user_attrs.get("parameters") != keys:
            log.warning(
                "the study was started with parameters %s; it now searches %s", study.user_attrs["parameters"], keys
            )
        self._recover(study)
        seed = self.cfg.seed + len(study.trials)  # a restarted worker must not replay the same draws
        if self._seed_in_use(study):
            seed += os.getpid()
            log.warning(
                "another live worker of this study uses automl.seed=%d; this worker adds its pid to the seed so they "
                "do not draw the same values (give each worker its own automl.seed for reproducible draws)",
                self.cfg.seed,
            )
        study.sampler = (
            optuna.samplers.RandomSampler(seed=seed)
            if self.cfg.algorithm == "random"
            else optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, self.cfg.num_trials // 4)))
        )
        if not study.trials and not study.user_attrs.get("enqueued"):
            for config in self.cfg.enqueue_trials:
                study.enqueue_trial(self._as_params(config))
            study.set_user_attr("enqueued", True)
        return study

    def _storage(self) -> Any:
        """The RDB storage; workers that start together race to create its tables, so a loser tries again."""
        from sqlalchemy.exc import IntegrityError, OperationalError

        for attempt in range(4):
            try:
                return self.optuna.storages.RDBStorage(self.storage_url)
            except (IntegrityError, OperationalError):
                time.sleep(0.5 * (attempt + 1))
        return self.optuna.storages.RDBStorage(self.storage_url)  # the last try lets its error through

    def _as_params(self, config: dict[str, Any]) -> dict[str, Any]:
        by_key = {p.key: p for p in self.params}
        unknown = sorted(set(config) - set(by_key))
        if unknown:
            raise SpecError(f"automl.enqueue_trials: {', '.join(unknown)} not among the searched keys {list(by_key)}")
        values = {**self.values, **{p.key: get_path(self.spec, p.key) for p in self.params}, **config}
        params: dict[str, Any] = {}
        for key, value in config.items():
            params.update(by_key[key].as_params(value, values))
        return params

    def _seed_in_use(self, study: Any) -> bool:
        """True when a RUNNING trial of another live worker (or one on another machine) has our seed."""
        for trial in study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.RUNNING,)):
            if _worker_alive(trial) and trial.user_attrs.get("worker", {}).get("seed") == self.cfg.seed:
                return True
        return False

    def _recover(self, study: Any) -> None:
        """Fail and requeue the trials that gone workers left RUNNING."""
        states = (self.optuna.trial.TrialState.RUNNING,)
        for trial in study.get_trials(deepcopy=False, states=states):
            if _worker_alive(trial):
                continue
            study.tell(trial.number, state=self.optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            worker = trial.user_attrs.get("worker", {})
            log.warning("trial %d was interrupted (worker %s is gone); it is queued again", trial.number, worker)

    def counted(self) -> int:
        """Trials that use up ``num_trials``: all but queued ones and interrupted ones that were retried."""
        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
        waiting = self.optuna.trial.TrialState.WAITING
        return sum(1 for t in trials if t.state != waiting and t.number not in retried)

    def run(self) -> Any:
        """Run trials until the study has ``num_trials`` (or ``timeout`` passes); return the study."""
        started = time.monotonic()
        log.info(
            "automl: %s search of %s over %s; study '%s' in %s",
            self.cfg.algorithm,
            self.cfg.metric,
            ", ".join(p.key for p in self.params),
            self.cfg.study_name,
            self.storage_shown,
        )
        progress = Progress("automl trials", total=self.cfg.num_trials, unit="trial", every_percent=0.1)
        progress.update(self.counted())
        while (done := self.counted()) < self.cfg.num_trials:
            if self.cfg.timeout is not None and time.monotonic() - started > self.cfg.timeout:
                log.info("automl: timeout of %g s reached; no new trials from this worker", self.cfg.timeout)
                break
            self._one_trial(done + 1)
            progress.update(self.counted() - progress.done)
        progress.close()
        return self.study

    def _one_trial(self, position: int) -> None:
        """Ask, run and tell one trial, the ``position``-th of ``num_trials``."""
        optuna = self.optuna
        trial = self.study.ask()
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "seed": self.cfg.seed})
        overrides = sample_overrides(self.params, trial, self.values)
        trial.set_user_attr("overrides", overrides)
        folder = trial_dir(self.out_dir, trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        shown = " ".join(f"{k}={_short(v)}" for k, v in overrides.items())
        log.info("automl: trial %d (%d/%d): %s", trial.number, position, self.cfg.num_trials, shown)
        outcome = self._launch_with_heartbeat(trial, folder, overrides)
        trial.set_user_attr("seconds", round(outcome.seconds, 3))
        trial.set_user_attr("epochs", outcome.epochs)
        if outcome.error:
            trial.set_user_attr("error", outcome.error)
        state = optuna.trial.TrialState[outcome.state]
        if outcome.state == "COMPLETE":
            self.study.tell(trial, outcome.value)
        else:
            self.study.tell(trial, state=state)
        result = f"{self.cfg.metric}={outcome.value:.4f}" if outcome.value is not None else "no metric"
        detail = f": {outcome.error}" if outcome.error else ""
        log.info("automl: trial %d %s, %s, %.0f s%s", trial.number, outcome.state, result, outcome.seconds, detail)
        kpi = {f"best_{self.cfg.metric}": self.study.best_value} if _has_complete(self.study) else None
        self.status.log(
            "RUNNING",
            f"Trial {trial.number} {outcome.state}{detail}",
            verbosity="WARNING" if outcome.state == "FAIL" else "INFO",
            kpi=kpi,
            trial=trial.number,
            trial_state=outcome.state,
            trial_value=outcome.value,
        )

    def _launch_with_heartbeat(self, trial: Any, folder: Path, overrides: dict[str, Any]) -> TrialOutcome:
        from sqlalchemy.exc import SQLAlchemyError

        stop = threading.Event()

        def beat() -> None:
            while True:
                try:
                    trial.set_user_attr("heartbeat", time.time())
                except SQLAlchemyError as exc:  # a missed beat is no reason to stop the trial
                    log.warning("automl: trial %d heartbeat not recorded: %s", trial.number, exc)
                if stop.wait(HEARTBEAT_S):
                    return

        thread = threading.Thread(target=beat, name=f"automl-heartbeat-{trial.number}", daemon=True)
        thread.start()
        try:
            return self._launch(trial, folder, overrides, self._resume_point(trial))
        finally:
            stop.set()
            thread.join()

    def _resume_point(self, trial: Any) -> Path | None:
        """For the retry of an interrupted trial: that trial's latest checkpoint, if it wrote one."""
        if "retry_of" not in trial.user_attrs:
            return None
        from ..engine.checkpoint import find_latest

        latest = find_latest(trial_dir(self.out_dir, trial.user_attrs["retry_of"]) / "train")
        if latest is not None:
            trial.set_user_attr("resumed_from", str(latest))
            log.info("automl: trial %d resumes trial %d from %s", trial.number, trial.user_attrs["retry_of"], latest)
        return latest

    def _launch(self, trial: Any, trial_dir: Path, overrides: dict[str, Any], resume: Path | None) -> TrialOutcome:
        spec_path = trial_dir / "spec.yaml"
        data = trial_spec(self.base, overrides, str(trial_dir))
        data.setdefault("train", {}).setdefault("plots", False)  # no report per trial unless the spec asks
        if resume is not None:
            data.setdefault("train", {})["resume_training_checkpoint_path"] = str(resume)
        atomic_write_text(spec_path, yaml.safe_dump(data, sort_keys=False))
        try:
            load_spec(spec_path, action="train")
        except RTDETRError as exc:  # the sampled values break a cross-field rule: a failed trial, not a failed search
            return TrialOutcome("FAIL", None, 0.0, 0, str(exc))

        def report(epoch: int, value: float) -> bool:
            trial.report(value, epoch)
            return trial.should_prune()

        return self.runner(spec_path, trial_dir, self.cfg.metric, report)


def _worker_alive(trial: Any) -> bool:
    """Whether the worker running ``trial`` still exists: its process on this machine, its heartbeat elsewhere."""
    worker = trial.user_attrs.get("worker", {})
    if worker.get("host") == socket.gethostname():
        return _alive(worker.get("pid", -1))
    start = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
    return time.time() - trial.user_attrs.get("heartbeat", start) < STALE_S


def _alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _has_complete(study: Any) -> bool:
    return any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
