"""``rtdetr default_specs [results_dir=DIR] [--check | --skill]``: spec templates and JSON schemas for users.

Writes ``DIR/spec_templates/spec_template_<action>.yaml`` and ``DIR/schemas/<action>.schema.json``
(+ ``manifest.json``), the same layout as the repository, so ``rtdetr default_specs results_dir=.``
in a checkout regenerates the committed files and ``--check`` verifies them. ``--skill`` writes TAO's
skill-bank layout instead (see :mod:`rtdetr_tao.config.tao_skill`), a directory TAO's AutoML runner drives.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.loader import apply_override, parse_override, read_yaml
from ..config.schema import stale_files, write_generated
from ..config.tao_skill import write_skill
from ..errors import SpecError

log = logging.getLogger(__name__)


def main(spec_path: str | None, overrides: list[str], *, check: bool = False, skill: bool = False) -> int:
    """Write (or, with ``check``, verify) the generated files under ``results_dir``; ``skill``: TAO's layout."""
    root = Path(_results_dir(spec_path, overrides))
    if skill and check:
        raise SpecError("default_specs takes --check or --skill, not both")
    if skill:
        written = write_skill(root)
        log.info("wrote TAO skill directory %s (%d files)", root, len(written))
        return 0
    if check:
        stale = stale_files(root)
        if stale:
            raise SpecError(
                f"{len(stale)} generated file(s) under {root} are out of date: {', '.join(stale)}; "
                f"regenerate with: rtdetr default_specs results_dir={root}"
            )
        log.info("spec templates and schemas under %s are up to date", root)
        return 0
    written = write_generated(root)
    log.info("wrote %d files under %s (spec_templates/, schemas/)", len(written), root)
    return 0


def _results_dir(spec_path: str | None, overrides: list[str]) -> str:
    data = read_yaml(spec_path) if spec_path else {}
    for item in overrides:
        key, value = parse_override(item)
        if key != "results_dir":
            raise SpecError(f"default_specs takes only results_dir=DIR, not '{item}'")
        apply_override(data, key, value, item)
    value = data.get("results_dir") or "results"
    if not isinstance(value, str):
        raise SpecError(f"results_dir must be a path, got {value!r}")
    return value
