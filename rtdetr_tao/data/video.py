"""Video files and streams as frames, with PyAV (FFmpeg). Torch-free.

``infer_data_sources.image_dir`` may list video files (mp4, avi, mov, mkv, webm), or folders holding them beside
images; ``infer_data_sources.stream`` is a camera or network stream (``rtsp://``, ``http(s)://``, ``/dev/video0``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import DataError, require

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DEFAULT_FPS = Fraction(30)  # when a stream does not state its frame rate


def is_video(path: str | Path) -> bool:
    """Whether ``path`` names a video file by its suffix."""
    return Path(str(path)).suffix.lower() in VIDEO_SUFFIXES


def list_videos(folder: str | Path) -> list[Path]:
    """Every video file under ``folder`` (recursively), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if is_video(p) and p.is_file())


def split_media(entries: Sequence[str], cache_dir: str | None = None) -> tuple[list[str], list[Path]]:
    """``image_dir`` entries → (entries to read images from, video files). A video file (local or ``s3://``,
    downloaded into the cache) is a video; a local folder also yields the videos inside it."""
    from .preprocess import list_images
    from .sources import is_s3, resolve_file

    images, videos = [], []
    for entry in entries:
        if is_video(entry):
            path = resolve_file(entry, cache_dir) if is_s3(entry) else Path(entry).expanduser()
            if not path.is_file():
                raise DataError(f"video not found: {entry} (check infer_data_sources.image_dir)")
            videos.append(path)
            continue
        inside = list_videos(Path(entry).expanduser()) if not is_s3(entry) and Path(entry).expanduser().is_dir() else []
        videos += inside
        if not inside or list_images(Path(entry).expanduser()):  # a folder of videos only is no image source
            images.append(entry)
    return images, videos


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``index`` from 0, ``timestamp`` in seconds from the stream's start, RGB ``image``."""

    index: int
    timestamp: float
    image: Image.Image


class VideoReader:
    """Decodes the first video stream of a file or URL. ``codec``, ``fps``, ``size`` (w, h) and ``frames`` (0 when
    unknown, as for live streams) describe it; iterate for :class:`Frame`s; ``close()`` (or ``with``) releases it.

    Raises:
        DependencyError: PyAV is not installed.
        DataError: the file or stream cannot be opened or has no video stream (one line, naming it).
    """

    def __init__(self, source: str | Path, *, live: bool = False) -> None:
        av = require("av", extra="video", purpose="Video inference")
        self.source, self.live = str(source), live
        options = {"rtsp_transport": "tcp"} if self.source.startswith("rtsp://") else {}
        try:
            self.container = av.open(self.source, options=options, timeout=30.0 if live else None)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise DataError(f"cannot read video {self.source}: {_reason(exc)}; check the path or URL") from None
        if not self.container.streams.video:
            self.container.close()
            raise DataError(f"{self.source} has no video stream; give a video file (mp4, avi, mov, mkv) or stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        context = self.stream.codec_context
        self.codec: str = context.name
        self.size: tuple[int, int] = (context.width, context.height)
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps: Fraction = Fraction(rate) if rate else DEFAULT_FPS
        self.frames: int = int(self.stream.frames or 0)
        self.bit_rate: int = int(context.bit_rate or self.stream.bit_rate or 0)

    def __iter__(self) -> Iterator[Frame]:
        av = require("av", extra="video", purpose="Video inference")
        index = 0
        try:
            for frame in self.container.decode(self.stream):
                timestamp = float(frame.time) if frame.time is not None else index / float(self.fps)
                yield Frame(index, timestamp, frame.to_image())
                index += 1
        except av.FFmpegError as exc:
            if index == 0:
                raise DataError(f"cannot decode video {self.source}: {_reason(exc)}") from None
            log.warning("%s: decoding stopped after %d frames: %s", self.source, index, _reason(exc))

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: Any) -> str:
    """FFmpeg's message without PyAV's errno prefix and file name."""
    return str(getattr(exc, "strerror", None) or exc).strip().rstrip(".")
