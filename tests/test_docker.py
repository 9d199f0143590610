"""Static checks of the containers (no Docker engine here): extras, entrypoints, pins, non-root user."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")


def project(repo_root: Path) -> dict:
    return tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]


def names(requirements) -> set[str]:
    return {
        re.split(r"[<>=!~\[ ]", r.strip().strip('"'), maxsplit=1)[0].lower().replace("_", "-") for r in requirements
    }


def dockerfile(repo_root: Path, name: str) -> str:
    # join continuation lines so one RUN is one line
    return (repo_root / "docker" / name).read_text().replace("\\\n", " ")


@pytest.mark.parametrize(
    ("name", "entrypoint"), [("Dockerfile.train", "rtdetr"), ("Dockerfile.deploy", "rtdetr-deploy")]
)
def test_entrypoint_is_a_console_script_and_user_is_not_root(repo_root, name, entrypoint):
    text = dockerfile(repo_root, name)
    assert f'ENTRYPOINT ["{entrypoint}"]' in text
    assert entrypoint in project(repo_root)["scripts"]
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert 'VOLUME ["/results", "/data"]' in text
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert ":" in base and not base.endswith(":latest")


def test_train_image_installs_defined_extras(repo_root):
    text = dockerfile(repo_root, "Dockerfile.train")
    extras = re.search(r'pip install -c \S+ "\.\[([a-z,]+)\]"', text).group(1).split(",")
    defined = project(repo_root)["optional-dependencies"]
    assert extras and all(e in defined for e in extras)
    pinned = names(
        line
        for line in (repo_root / "docker/constraints-train.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    wanted = names(project(repo_root)["dependencies"]) | {n for e in extras for n in names(defined[e])}
    assert wanted - {"torch", "torchvision"} <= pinned  # torch comes from the base image


def test_deploy_image_installs_exactly_the_deploy_extra_without_torch(repo_root):
    text = dockerfile(repo_root, "Dockerfile.deploy")
    assert "pip install --no-deps ." in text
    run = re.search(r"pip install -c \S+\s+((?:\"[^\"]+\"\s*)+)", text).group(1)
    installed = names(re.findall(r'"([^"]+)"', run))
    deploy_extra = project(repo_root)["optional-dependencies"]["deploy"]
    assert installed == names(deploy_extra)
    assert "torch" not in installed and not any("torch" in n for n in installed)
    pinned = names(
        line
        for line in (repo_root / "docker/constraints-deploy.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert installed <= pinned
