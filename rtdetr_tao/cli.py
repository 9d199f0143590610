"""``rtdetr <action> -e spec.yaml [key=value ...]``: the command line (also ``rtdetr-deploy``'s).

One job per call: load the spec (file, then dotted overrides, then validation, then the action's required keys
and rules), then hand the frozen spec to the ``run`` of the action's module. The actions and what each needs are
declared in :mod:`rtdetr_tao.commands`. User errors print one line and exit 2; ``--debug`` adds the
traceback. ``--dry-run`` prints the resolved spec and runs nothing.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

import yaml

from . import __version__, relay
from .commands import ACTIONS, Action, commands
from .errors import RTDETRError


class _ArgumentError(RTDETRError):
    """Bad command-line arguments."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise _ArgumentError(f"{message} (see {self.prog} --help)")


def run_cli(prog: str, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the action of ``prog`` it names, and turn every error into one line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        code = _run(prog, commands(prog), argv)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below, not at interpreter exit
        return code
    except RTDETRError as exc:
        if debug:
            traceback.print_exc()
        if not relay.record(exc):  # a torchrun worker leaves the message to its launcher
            print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`rtdetr ... | head`): stop quietly, as `yes | head` does
        _silence_stdout()
        return 141
    except Exception as exc:  # a bug, not a user error: say so
        if debug:
            traceback.print_exc()
        if not relay.record(exc):
            print(
                f"{prog}: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                file=sys.stderr,
            )
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind sys.stdout (e.g. captured by a test)
        pass


def _run(prog: str, actions: dict[str, str], argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_overview(prog, actions))
        return 0
    if argv[0] == "--version":
        print(f"{prog} {__version__}")
        return 0
    flags = [a for a in argv if a in ("--debug", "--dry-run")]
    positional = [a for a in argv if a not in flags]  # the flags may come before the action too
    if not positional:
        print(_overview(prog, actions))
        return 0
    name, rest = positional[0], positional[1:] + flags
    if name == "weights" and prog == "rtdetr":
        return _weights(prog, rest)
    if name not in actions:
        close = difflib.get_close_matches(name, list(actions), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise _ArgumentError(f"unknown action '{name}'; {hint}actions: {', '.join(actions)}")
    declared = actions[name]  # the action's name in ACTIONS (rtdetr-deploy's evaluate is deploy_evaluate)
    action = ACTIONS[declared]
    args = _action_parser(prog, name, action).parse_args(rest)
    _setup_logging(args.debug)
    if not action.sections:  # no experiment spec: the module's main reads what it needs
        module = importlib.import_module(action.module)
        flags = {flag: getattr(args, flag) for flag, _ in action.flags}
        return int(module.main(args.spec, args.overrides, **flags) or 0)

    from .config import load_spec

    loaded = load_spec(args.spec, args.overrides, action=declared)
    log = logging.getLogger(f"{prog}.{name}")
    for warning in loaded.warnings:
        log.warning(warning)
    if args.dry_run or (action.distributed and loaded.spec.train.is_dry_run):
        print(yaml.safe_dump(loaded.spec.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    if action.distributed:
        from .engine.distributed import maybe_launch

        train = loaded.spec.train
        code = maybe_launch(train.num_gpus, train.device_ids, train.num_nodes, train.device, [name, *rest])
        if code is not None:
            return code
    from .data.localize import localize

    spec = localize(loaded.spec, loaded.spec.dataset.cache_dir)  # s3:// files of every path key, downloaded once
    module = importlib.import_module(action.module)
    module.run(spec)
    return 0


def _weights(prog: str, argv: list[str]) -> int:
    """``rtdetr weights list``: the named pretrained weights (:mod:`rtdetr_tao.catalog`)."""
    parser = _Parser(prog=f"{prog} weights", description="Named pretrained weights.")
    parser.add_argument("command", choices=["list"], help="list: print the catalog and the cache folder.")
    parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)
    parser.parse_args(argv)
    from .catalog import format_catalog

    print(format_catalog())
    return 0


def _action_parser(prog: str, name: str, action: Action) -> _Parser:
    parser = _Parser(
        prog=f"{prog} {name}",
        description=action.help,
        epilog="Overrides are dotted keys with YAML values, e.g. train.num_epochs=10 'train.gpu_ids=[0,1]'.",
    )
    required = bool(action.sections)
    parser.add_argument(
        "-e",
        "--experiment_spec_file",
        "--experiment_spec",
        dest="spec",
        required=required,
        help="Experiment spec (YAML)." + ("" if required else " Optional."),
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="Dotted-key overrides.")
    parser.add_argument("--dry-run", action="store_true", help="Print the resolved spec and exit.")
    parser.add_argument("--debug", action="store_true", help="Debug logging and tracebacks.")
    for flag, text in action.flags:
        parser.add_argument(f"--{flag}", action="store_true", help=text)
    return parser


def _overview(prog: str, actions: dict[str, str]) -> str:
    width = max(map(len, actions))
    lines = [f"usage: {prog} <action> -e spec.yaml [key=value ...] [--dry-run] [--debug]", "", "actions:"]
    lines += [f"  {verb:<{width}}  {ACTIONS[name].help}" for verb, name in actions.items()]
    if prog == "rtdetr":
        lines += ["", f"{prog} weights list: named pretrained weights (catalog names work as weights paths)."]
    lines += ["", f"'{prog} <action> --help' for an action's options."]
    return "\n".join(lines)


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rtdetr`` console script."""
    return run_cli("rtdetr", argv)


if __name__ == "__main__":
    sys.exit(main())
