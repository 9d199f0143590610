"""``rtdetr-deploy gen_trt_engine | evaluate | inference -e spec.yaml [key=value ...]`` (no PyTorch needed).

The actions are declared with the others in :mod:`rtdetr_tao.commands`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rtdetr_tao.cli import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rtdetr-deploy`` console script."""
    return run_cli("rtdetr-deploy", argv)


if __name__ == "__main__":
    sys.exit(main())
