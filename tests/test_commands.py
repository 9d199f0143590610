"""One record per action (rtdetr_tao.commands) drives both CLIs, spec loading, the schemas and the templates."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from rtdetr_tao.commands import ACTIONS, SPEC_ACTIONS, Action, commands
from rtdetr_tao.config import load_spec
from rtdetr_tao.config.tao_skill import SKILL_ACTIONS
from rtdetr_tao.errors import SpecError


def _top_level_functions(module: str) -> set[str]:
    """The functions a module defines, read from its source (importing would pull in torch or TensorRT)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{module} not found"
    tree = ast.parse(Path(spec.origin).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize("name", list(ACTIONS))
def test_every_record_names_a_module_with_its_entry_point(name: str) -> None:
    action = ACTIONS[name]
    entry = "run" if action.sections else "main"  # an action without a spec gets (spec_path, overrides, **flags)
    assert entry in _top_level_functions(action.module), f"{action.module} has no {entry}()"
    assert action.prog in ("rtdetr", "rtdetr-deploy") and action.help
    if action.sections:
        assert action.description and not action.flags
        assert all(key.split(".")[0] in action.sections for key in action.required), action.required


@pytest.mark.parametrize("prog", ["rtdetr", "rtdetr-deploy"])
def test_each_cli_lists_exactly_its_records(prog: str, capsys) -> None:
    from rtdetr_deploy.cli import main as deploy_main

    from rtdetr_tao.cli import main

    assert (main if prog == "rtdetr" else deploy_main)(["--help"]) == 0
    listed = capsys.readouterr().out.split("actions:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    expected = [(a.verb, a.help) for a in ACTIONS.values() if a.prog == prog]
    assert [tuple(line.split(None, 1)) for line in listed] == expected
    assert list(commands(prog)) == [verb for verb, _ in expected]


def test_generated_files_are_the_records(repo_root: Path) -> None:
    manifest = json.loads((repo_root / "schemas" / "manifest.json").read_text())["actions"]
    assert list(manifest) == list(SPEC_ACTIONS) == [name for name, a in ACTIONS.items() if a.sections]
    for name, entry in manifest.items():
        action = ACTIONS[name]
        assert (entry["command"], entry["description"], entry["required"]) == (
            action.command,
            action.description,
            list(action.required),
        )
        schema = json.loads((repo_root / "schemas" / entry["schema"]).read_text())
        assert schema["title"] == f"{action.command} spec"
        template = yaml.safe_load((repo_root / "spec_templates" / entry["template"]).read_text())
        assert tuple(template) == action.sections
    assert {p.name for p in (repo_root / "schemas").glob("*.schema.json")} == {f"{n}.schema.json" for n in manifest}
    assert {p.name for p in (repo_root / "spec_templates").glob("spec_template_*.yaml")} == {
        f"spec_template_{n}.yaml" for n in manifest
    }
    assert SKILL_ACTIONS and all(ACTIONS[n].prog == "rtdetr" and ACTIONS[n].sections for n in SKILL_ACTIONS)


def test_missing_required_keys_fail_at_load_before_the_module_is_imported(tmp_path: Path) -> None:
    """For every action: one line naming each required key and how to set it, exit 2, its module never imported."""
    empty = tmp_path / "spec.yaml"
    empty.write_text(f"results_dir: {tmp_path / 'results'}\n")
    code = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from rtdetr_tao.cli import run_cli
        from rtdetr_tao.commands import ACTIONS
        out = {{}}
        for name, action in ACTIONS.items():
            if not action.required:
                continue
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = run_cli(action.prog, [action.verb, "-e", {str(empty)!r}])
            out[name] = [rc, err.getvalue(), action.module in sys.modules, "torch" in sys.modules]
        print(json.dumps(out))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    seen = json.loads(done.stdout)
    assert set(seen) == {name for name, a in ACTIONS.items() if a.required}
    for name, (rc, err, imported, torch_loaded) in seen.items():
        action = ACTIONS[name]
        assert rc == 2 and err.count("\n") == 1 and err.startswith(f"{action.prog}: error: {empty}: "), err
        for key in action.required:
            assert (
                f"{key} is required by {name.replace('_', ' ')} but it is not set; set it in the spec or pass {key}=..."
                in err
            )
        assert not imported and not torch_loaded, (name, imported, torch_loaded)


def test_a_new_record_is_all_an_action_needs(tmp_path: Path, monkeypatch, capsys) -> None:
    """Adding a record (and its module) makes the action known to the CLI, the loader's checks and --help."""
    (tmp_path / "probe_action.py").write_text("RAN = []\n\ndef run(spec):\n    RAN.append(spec.export.onnx_file)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    record = Action(
        "rtdetr probe",
        "probe_action",
        help="A probe.",
        description="A probe.",
        sections=("results_dir", "export"),
        required=("export.onnx_file",),
        rules=(lambda spec: None if spec.export.opset_version >= 17 else "probe: export.opset_version below 17",),
    )
    monkeypatch.setitem(ACTIONS, "probe", record)
    from rtdetr_tao.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text(f"results_dir: {tmp_path / 'results'}\n")
    assert main(["--help"]) == 0 and "  probe " in capsys.readouterr().out
    assert main(["probe", "-e", str(spec)]) == 2
    assert "export.onnx_file is required by probe but it is not set" in capsys.readouterr().err
    with pytest.raises(SpecError, match="probe: export.opset_version below 17"):
        load_spec(spec, ["export.onnx_file=m.onnx", "export.opset_version=16"], action="probe")
    assert main(["probe", "-e", str(spec), "export.onnx_file=m.onnx"]) == 0
    assert sys.modules["probe_action"].RAN == ["m.onnx"]
