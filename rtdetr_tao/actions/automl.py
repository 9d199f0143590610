"""``rtdetr automl``: hyper-parameter search whose trials are real ``rtdetr train`` runs.

Writes under ``results_dir/automl/``: ``study.db`` (the Optuna study, unless ``automl.storage`` names
another database), ``trial_NNN/`` (the trial's ``spec.yaml``, ``train.log`` and ``train/`` results),
``results.csv`` and ``results.json`` (trial, state, metric, seconds, epochs, sampled values, error),
``best_spec.yaml`` (the best trial's train spec, results_dir set back to the base spec's; ``results.json`` names the
best trial's train folder and checkpoint for evaluate / export / inference),
``metric_over_trials.png``, ``parameter_importance.png`` and ``status.json`` (one record per trial).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..automl.report import trial_rows, write_best_spec, write_plots, write_tables
from ..automl.study import Search, best_checkpoint, trial_dir, trial_spec
from ..automl.trials import TrialRunner, run_trial
from ..config import ExperimentSpec, load_spec
from ..errors import TrainingError
from ..outputs.job import job_outputs

log = logging.getLogger(__name__)


def run(spec: ExperimentSpec, runner: TrialRunner = run_trial) -> Path:
    """Run (or continue) the search; return the path of ``best_spec.yaml``. Raises :class:`TrainingError` (after
    writing the results table) when no trial completed."""
    with job_outputs(spec, "automl") as job:
        search = Search(spec, job.out_dir, job.status, runner)
        study = search.run()
        metric = spec.automl.metric
        rows = trial_rows(study)
        complete = [r for r in rows if r["state"] == "COMPLETE"]
        best = study.best_trial if complete else None
        best_train = trial_dir(job.out_dir, best.number) / "train" if best else None
        checkpoint = best_checkpoint(best_train) if best_train else None
        summary = {
            "metric": metric,
            "direction": spec.automl.goal,
            "algorithm": spec.automl.algorithm,
            "study_name": spec.automl.study_name,
            "storage": search.storage_shown,
            "best_trial": best.number if best else None,
            "best_value": best.value if best else None,
            "best_overrides": best.user_attrs.get("overrides") if best else None,
            "best_train_dir": str(best_train) if best_train else None,  # for evaluate / export / inference
            "best_checkpoint": str(checkpoint) if checkpoint else None,
        }
        write_tables(rows, job.out_dir, metric, summary)
        plots = write_plots(study, rows, job.out_dir, metric, spec.automl.goal == "maximize")
        counts = {state: sum(r["state"] == state for r in rows) for state in ("COMPLETE", "PRUNED", "FAIL")}
        log.info(
            "automl: %d trials (%s); table in %s, plots: %s",
            len(rows),
            ", ".join(f"{n} {s.lower()}" for s, n in counts.items()),
            job.out_dir / "results.csv",
            ", ".join(p.name for p in plots),
        )
        if best is None:
            errors = [r["error"] for r in rows if r["error"]]
            raise TrainingError(
                f"no trial of the study completed ({counts['FAIL']} failed, {counts['PRUNED']} pruned); first error: "
                f"{errors[0] if errors else 'none recorded'}; see {job.out_dir / 'results.csv'}"
            )
        path = job.out_dir / "best_spec.yaml"
        overrides = best.user_attrs["overrides"]
        header = (
            f"rtdetr automl: best of {len(rows)} trials is trial {best.number}, {metric}={best.value:.4f}\n"
            f"searched: {', '.join(f'{k}={v}' for k, v in overrides.items())}\n"
            f"train it with: rtdetr train -e {path}"
        )
        write_best_spec(path, trial_spec(search.base, overrides, spec.results_dir), header)
        load_spec(path, action="train")  # what we hand over must load
        weights = checkpoint or best_train
        log.info("automl: best trial %d, %s=%.4f; spec %s, weights %s", best.number, metric, best.value, path, weights)
        job.final_fields = {"kpi": {f"best_{metric}": best.value}, "best_trial": best.number}
        return path
