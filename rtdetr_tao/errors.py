"""The one family of user-facing exceptions.

Every error a user can fix is an :class:`RTDETRError`. Its message names the file, key or value at
fault and says how to fix it; the CLI prints it as one line and exits non-zero. Anything else that
escapes is a bug and is reported as such (with a traceback under ``--debug``).
"""

from __future__ import annotations


class RTDETRError(Exception):
    """Base class: a problem the user can fix. The message is the whole story, on one line (line breaks that
    come from user input, such as an override or a key holding a newline, are shown escaped)."""

    exit_code = 2

    def __str__(self) -> str:
        return super().__str__().replace("\r", "\\r").replace("\n", "\\n")


class SpecError(RTDETRError):
    """The experiment spec (file or overrides) is invalid."""


class DataError(RTDETRError):
    """A dataset, annotation file, image or data source is missing or malformed."""


class CheckpointError(RTDETRError):
    """A checkpoint or weights file cannot be read or does not fit the model."""


class DependencyError(RTDETRError):
    """An optional dependency is missing; the message carries the install hint."""


class ExportError(RTDETRError):
    """Export or a post-export check failed."""


class TrainingError(RTDETRError):
    """Training diverged or cannot continue (e.g. a non-finite loss)."""


class DistributedError(RTDETRError):
    """Launching or joining a distributed run failed."""


def require(module: str, *, extra: str, purpose: str, package: str | None = None):
    """Import an optional dependency or raise :class:`DependencyError` with an install hint.

    >>> ort = require("onnxruntime", extra="onnx", purpose="ONNX inference")  # doctest: +SKIP
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(
            f"{purpose} needs the '{package or module.split('.')[0]}' package, which is not installed "
            f"({exc}); install it with: pip install 'rtdetr-tao[{extra}]'"
        ) from exc
