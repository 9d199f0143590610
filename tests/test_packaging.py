"""Packaging and repository hygiene: package list, torch-free core, lint, the README's commands and CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_every_package_directory_is_packaged(repo_root: Path):
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((repo_root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(repo_root).parts) for p in (repo_root / "rtdetr_tao").rglob("__init__.py")}
    found |= {
        "rtdetr_deploy" + "".join(f".{x}" for x in p.parent.relative_to(repo_root / "deploy").parts)
        for p in (repo_root / "deploy").rglob("__init__.py")
    }
    assert found == listed


def test_config_and_cli_import_without_torch():
    """The spec system and the CLI front end must not pull in torch (the deploy container has none)."""
    code = (
        "import sys, rtdetr_tao, rtdetr_tao.cli, rtdetr_tao.config, rtdetr_tao.config.schema; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_ruff_clean(repo_root: Path):
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ci_runs_exactly_the_readme_test_command(repo_root: Path):
    readme = (repo_root / "README.md").read_text()
    block = readme.split("<!-- test-command -->", 2)[1]
    command = next(line for line in block.splitlines() if line and not line.startswith("```"))
    ci = [line for line in (repo_root / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == command, (ci, command)
