"""Shared pytest setup: repository paths and the shared TAO reference material."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

# Keep CPU tests reproducible and light on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tao_specs_dir() -> Path:
    path = SHARED / "tao_reference_specs"
    if not path.is_dir():
        pytest.skip(f"TAO reference specs not found at {path} (the shared/ folder sits beside the checkout)")
    return path
