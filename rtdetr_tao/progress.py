"""Progress of long steps: a tqdm bar on a terminal; in logs (not a terminal) one line per ``every_percent`` of the
total, or every ``every_s`` seconds when the total is unknown, each with the rate and the ETA. Silent where
``enabled`` is false; by default only the process of rank 0 (``RANK`` unset or 0) shows progress. Torch-free.

    with Progress("COCO evaluation", total=len(images), unit="img") as progress:
        for image in images:
            ...
            progress.update()
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("rtdetr_tao.progress")


class Progress:
    """Counts work done towards ``total`` (None: unknown). ``unit="B"`` shows bytes with k/M/G prefixes."""

    def __init__(
        self,
        desc: str,
        total: float | None = None,
        *,
        unit: str = "it",
        enabled: bool | None = None,
        tty: bool | None = None,
        every_percent: float = 10.0,
        every_s: float = 30.0,
    ) -> None:
        if enabled is None:
            enabled = os.environ.get("RANK", "0") in ("", "0")
        self.desc, self.total, self.unit, self.enabled = desc, total or None, unit, enabled
        self.every_percent, self.every_s = every_percent, every_s
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.done = 0.0
        self.start = self._last_log = time.monotonic()
        self._next_percent = every_percent
        self.bar: Any = None
        if enabled and self.tty:
            from tqdm import tqdm

            bytes_ = unit == "B"
            self.bar = tqdm(
                total=self.total, desc=desc, unit=unit, unit_scale=bytes_, unit_divisor=1024 if bytes_ else 1000,
                dynamic_ncols=True, leave=False,
            )  # fmt: skip

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(finished=exc[0] is None)

    def update(self, amount: float = 1, **postfix: Any) -> None:
        """Add ``amount`` of work done; ``postfix`` values show beside the bar (and in the log lines)."""
        self.done += amount
        if not self.enabled:
            return
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(amount)
            return
        now = time.monotonic()
        if self.total:
            percent = 100.0 * self.done / self.total
            if percent + 1e-9 < self._next_percent:
                return
            self._next_percent = (math.floor(percent / self.every_percent) + 1) * self.every_percent
        elif now - self._last_log < self.every_s:
            return
        self._last_log = now
        log.info("%s", self.line(postfix))

    def line(self, postfix: dict[str, Any] | None = None) -> str:
        """``desc: 40% (400/1000 img), 12.5 img/s, ETA 0:00:48`` (or without total and ETA; bytes as KiB, MiB...)."""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.desc}:"]
        if self.total:
            done = self._amount(self.done) if self.unit == "B" else f"{self.done:g}"
            parts.append(f"{100 * self.done / self.total:.0f}% ({done}/{self._amount(self.total)})")
        else:
            parts.append(self._amount(self.done))
        parts.append(f"{self._amount(rate)}/s")
        if self.total and rate > 0:
            parts.append(f"ETA {format_seconds((self.total - self.done) / rate)}")
        parts += [f"{key} {value}" for key, value in (postfix or {}).items()]
        return ", ".join([" ".join(parts[:2]), *parts[2:]])

    def close(self, *, finished: bool = True) -> None:
        """End the bar; in logs, a last line unless the 100 % line was already written."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and finished and not (self.total and self._next_percent > 100):
            log.info("%s", self.line())
        self.enabled = False

    def _amount(self, value: float) -> str:
        if self.unit != "B":
            return f"{value:.1f} {self.unit}" if value != int(value) else f"{int(value)} {self.unit}"
        prefixes, index = ("B", "KiB", "MiB", "GiB", "TiB"), 0
        while abs(value) >= 1024 and index < len(prefixes) - 1:
            value, index = value / 1024, index + 1
        return f"{int(value)} B" if index == 0 else f"{value:.1f} {prefixes[index]}"


def format_seconds(seconds: float) -> str:
    """``H:MM:SS``; ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@contextmanager
def stage(desc: str, *, every_s: float = 30.0, enabled: bool | None = None) -> Iterator[None]:
    """A long call that reports no progress of its own (ONNX export, engine build, COCOeval): a log line when it
    starts, one every ``every_s`` seconds while it runs (elapsed time), and one with its duration when it ends."""
    if enabled is None:
        enabled = os.environ.get("RANK", "0") in ("", "0")
    if not enabled:
        yield
        return
    log.info("%s ...", desc)
    start, done = time.monotonic(), threading.Event()

    def heartbeat() -> None:
        while not done.wait(every_s):
            log.info("%s: still running, %s elapsed", desc, format_seconds(time.monotonic() - start))

    thread = threading.Thread(target=heartbeat, name="progress-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    log.info("%s: done in %.1f s", desc, time.monotonic() - start)
