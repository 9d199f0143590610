"""The rtdetr command line: dry runs, one-line errors, exit codes, default_specs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from rtdetr_tao.cli import main
from rtdetr_tao.config import load_spec

SOURCES = (
    "dataset.train_data_sources=[{image_dir: s3://b/train/images.tar.gz, json_file: s3://b/train/annotations.json}]"
)


def test_dry_run_prints_the_resolved_spec(tmp_path, capsys, tao_specs_dir):
    code = main(
        [
            "train",
            "-e",
            str(tao_specs_dir / "train.yaml"),
            SOURCES,
            "model.backbone=resnet_50",
            "model.pretrained_backbone_path=/p.pth",
            f"results_dir={tmp_path / 'r'}",
            "train.num_epochs=3",
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    printed = yaml.safe_load(out)
    assert printed["train"]["num_epochs"] == 3 and printed["dataset"]["remap_mscoco_category"] is True
    assert printed["dataset"]["train_data_sources"][0]["json_file"] == "s3://b/train/annotations.json"
    # The printed spec is complete: reloading it gives the same spec.
    again = tmp_path / "resolved.yaml"
    again.write_text(out)
    assert (
        load_spec(again).spec.model_dump()
        == load_spec(
            tao_specs_dir / "train.yaml",
            [
                SOURCES,
                "model.backbone=resnet_50",
                "model.pretrained_backbone_path=/p.pth",
                f"results_dir={tmp_path / 'r'}",
                "train.num_epochs=3",
            ],
        ).spec.model_dump()
    )
    assert not (tmp_path / "r").exists()


def test_tao_is_dry_run_key_means_dry_run(tmp_path, capsys):
    assert main(["train", "-e", _spec(tmp_path, "train:\n  is_dry_run: true\n"), SOURCES]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["is_dry_run"] is True


def _spec(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("train:\n  num_epoch: 3\n", [SOURCES], "unknown key 'train.num_epoch' (did you mean 'train.num_epochs'?)"),
        ("train:\n  num_epochs: many\n", [SOURCES], "train.num_epochs: Input should be a valid integer"),
        ("train:\n  num_epochs: 0\n", [SOURCES], "train.num_epochs: Input should be greater than or equal to 1"),
        ("train:\n  optim:\n    lr_scheduler: Cosine\n", [SOURCES], "'MultiStep', 'StepLR' or 'FlatCosine'"),
        ("train: [\n", [SOURCES], "invalid YAML"),
        (
            "dataset:\n  train_data_sources: ???\n",
            [],
            "dataset.train_data_sources is required by train but it is '???'",
        ),
    ],
)
def test_bad_specs_give_one_line_and_write_nothing(tmp_path, capsys, text, overrides, expected):
    results = tmp_path / "results"
    code = main(["train", "-e", _spec(tmp_path, text), *overrides, f"results_dir={results}"])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1 and err.startswith("rtdetr: error: ")
    assert not results.exists()


def test_missing_spec_file(tmp_path, capsys):
    assert main(["train", "-e", str(tmp_path / "absent.yaml")]) == 2
    assert "spec file not found" in capsys.readouterr().err


def test_unknown_action_suggests(capsys):
    assert main(["trian"]) == 2
    assert "did you mean 'train'?" in capsys.readouterr().err


def test_missing_e_flag_is_one_line(capsys):
    assert main(["evaluate"]) == 2
    err = capsys.readouterr().err
    assert "the following arguments are required: -e" in err and err.count("\n") == 1


def test_default_specs_writes_and_checks(tmp_path, capsys):
    assert main(["default_specs", f"results_dir={tmp_path}"]) == 0
    assert (tmp_path / "spec_templates" / "spec_template_train.yaml").is_file()
    assert (tmp_path / "schemas" / "train.schema.json").is_file()
    assert main(["default_specs", "--check", f"results_dir={tmp_path}"]) == 0
    (tmp_path / "schemas" / "train.schema.json").write_text("{}")
    assert main(["default_specs", "--check", f"results_dir={tmp_path}"]) == 2
    assert "schemas/train.schema.json" in capsys.readouterr().err


def test_console_entry_point_runs_as_module(tmp_path):
    """`python -m rtdetr_tao.cli` behaves like the console script: exit code and one stderr line."""
    done = subprocess.run(
        [sys.executable, "-m", "rtdetr_tao.cli", "train", "-e", str(tmp_path / "x.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"rtdetr: error: spec file not found: {tmp_path / 'x.yaml'} (check the -e path)"
    ]


@pytest.mark.parametrize("args", [["--help"], ["export", "--dry-run", "-e", "SPEC"]])
def test_a_closed_pipe_ends_quietly(tmp_path, args) -> None:
    """`rtdetr ... | head`: the reader is gone before anything is written; no traceback, no "internal error"."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("export: {checkpoint: model.pth, onnx_file: model.onnx}\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "rtdetr_tao.cli", *[str(spec) if a == "SPEC" else a for a in args]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # as `head` exits
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert stderr == ""


def test_flags_may_come_before_the_action(tmp_path, capsys) -> None:
    from rtdetr_tao.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text("dataset:\n  num_classes: 3\n")
    assert main(["--dry-run", "train", "-e", str(spec), SOURCES, f"results_dir={tmp_path}"]) == 0
    assert "num_classes: 3" in capsys.readouterr().out
