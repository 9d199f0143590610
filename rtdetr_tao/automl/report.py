"""What a search leaves behind: results table (CSV, JSON), ``best_spec.yaml`` and PNG plots."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from ..errors import require
from ..io import atomic_open, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, metric value, seconds, epochs, overrides, error, retry links."""
    rows = []
    trials = study.get_trials(deepcopy=False)
    retried_by = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    for t in trials:
        value = t.value
        if value is None and t.intermediate_values:  # a pruned trial: its last validation
            value = t.intermediate_values[max(t.intermediate_values)]
        error = t.user_attrs.get("error")
        if t.number in retried_by:
            error = f"interrupted; retried as trial {retried_by[t.number]}"
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "value": value,
                "seconds": t.user_attrs.get("seconds"),
                "epochs": t.user_attrs.get("epochs"),
                "overrides": t.user_attrs.get("overrides", {}),
                "error": error,
                "retry_of": t.user_attrs.get("retry_of"),
                "resumed_from": t.user_attrs.get("resumed_from"),
            }
        )
    return rows


def write_tables(rows: list[dict[str, Any]], out_dir: Path, metric: str, summary: dict[str, Any]) -> None:
    """``results.json`` (summary + rows) and ``results.csv`` (one column per searched key)."""
    atomic_write_json(out_dir / "results.json", {**summary, "trials": rows})
    keys = sorted({k for row in rows for k in row["overrides"]})
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["trial", "state", metric, "seconds", "epochs", *keys, "error"])
    for row in rows:
        shown = [_cell(row["overrides"].get(k)) for k in keys]
        writer.writerow([row["trial"], row["state"], _cell(row["value"]), _cell(row["seconds"]), _cell(row["epochs"]),
                         *shown, row["error"] or ""])  # fmt: skip
    atomic_write_text(out_dir / "results.csv", text.getvalue())


def write_best_spec(path: Path, spec_data: dict[str, Any], header: str) -> None:
    """The best trial's train spec, ready for ``rtdetr train -e``."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    atomic_write_text(path, comment + yaml.safe_dump(spec_data, sort_keys=False))


def write_plots(study: Any, rows: list[dict[str, Any]], out_dir: Path, metric: str, maximize: bool) -> list[Path]:
    """``metric_over_trials.png`` and, with two or more completed trials, ``parameter_importance.png``."""
    matplotlib = require("matplotlib", extra="automl", purpose="automl plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for state, style in (("COMPLETE", "o"), ("PRUNED", "x")):
        points = [(r["trial"], r["value"]) for r in rows if r["state"] == state and r["value"] is not None]
        if points:
            ax.plot(*zip(*points, strict=True), style, label=state.lower())
    best, curve = None, []
    for row in rows:
        if row["state"] == "COMPLETE" and row["value"] is not None:
            if best is None or (row["value"] > best if maximize else row["value"] < best):
                best = row["value"]
            curve.append((row["trial"], best))
    if curve:
        curve.append((rows[-1]["trial"], best))  # the line runs to the last trial
        ax.step(*zip(*curve, strict=True), where="post", label="best so far")
    failed = [r["trial"] for r in rows if r["state"] == "FAIL"]
    for number in failed:
        ax.axvline(number, color="red", alpha=0.3, lw=1)
    ax.set(xlabel="trial", ylabel=metric, title=f"{metric} per trial" + (" (red: failed)" if failed else ""))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")
    written.append(_save(fig, out_dir / "metric_over_trials.png"))

    importances = _importances(study)
    if importances:
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(importances) + 1.5))
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names])
        count = sum(r["state"] == "COMPLETE" for r in rows)
        ax.set(xlabel="importance (PED-ANOVA)", title=f"parameter importance for {metric} ({count} completed trials)")
        fig.tight_layout()
        written.append(_save(fig, out_dir / "parameter_importance.png"))
    plt.close("all")
    return written


def _importances(study: Any) -> dict[str, float]:
    """Optuna's importances over the parameters whose range was the same in every completed trial."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        log.info("automl: parameter importance needs two completed trials; %d completed", len(complete))
        return {}
    names = set.intersection(*(set(t.distributions) for t in complete))
    static = sorted(n for n in names if all(t.distributions[n] == complete[0].distributions[n] for t in complete))
    if not static:
        log.info("automl: no parameter had the same range in every completed trial; no importance plot")
        return {}
    return optuna.importance.get_param_importances(study, params=static)


def _save(fig: Any, path: Path) -> Path:
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    return path


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)
