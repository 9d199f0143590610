"""The files of video and stream inference: ``videos/<name>_annotated.<ext>`` (boxes drawn, the input's codec and
frame rate) and ``videos/<name>.jsonl`` (one JSON object per frame: ``frame``, ``timestamp`` in seconds,
``boxes`` [[x1, y1, x2, y2]] in pixels, ``scores``, ``classes`` (names), ``category_ids`` and, with tracking,
``track_ids``, -1 for a detection in no confirmed track). Torch-free.

Ctrl-C stops cleanly: the frames done so far are in a finalised video and complete JSON lines.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from ..data.video import Frame, VideoReader
from ..errors import require
from ..eval.detections import ImageDetections
from ..progress import Progress
from .draw import class_colors, draw_detections

log = logging.getLogger(__name__)

FALLBACK_CODEC = "mpeg4"  # when FFmpeg has no encoder for the input's codec
Detect = Callable[[list[Image.Image]], list[ImageDetections]]
"""RGB frames → their detections in frame pixels (all scores; the writer applies the threshold)."""


@dataclass(frozen=True)
class VideoResult:
    """What one video or stream produced."""

    video: Path
    jsonl: Path
    frames: int
    detections: int
    interrupted: bool


class AnnotatedVideo:
    """An output video with the input's codec (else :data:`FALLBACK_CODEC`), frame rate and size, written to a
    temporary name and renamed by :meth:`close` (which also flushes the encoder)."""

    def __init__(self, path: Path, codec: str, fps: Fraction, size: tuple[int, int], bit_rate: int) -> None:
        av = require("av", extra="video", purpose="Video inference")
        self.path = path
        self.partial = path.with_name(f".{path.stem}.partial{path.suffix}")
        self.container = av.open(str(self.partial), mode="w")
        try:
            self.stream = self.container.add_stream(codec, rate=fps)
        except (av.FFmpegError, ValueError) as exc:  # e.g. a decoder-only codec
            log.warning("no %s encoder (%s): writing %s with %s", codec, exc, path.name, FALLBACK_CODEC)
            self.stream = self.container.add_stream(FALLBACK_CODEC, rate=fps)
        self.stream.width, self.stream.height = size[0] - size[0] % 2, size[1] - size[1] % 2
        formats = [f.name for f in (self.stream.codec_context.codec.video_formats or [])]
        self.stream.pix_fmt = "yuv420p" if not formats or "yuv420p" in formats else formats[0]
        if bit_rate or self.stream.codec_context.name != "libx264":
            self.stream.bit_rate = bit_rate or 8_000_000
        self.frames = 0

    def write(self, image: Image.Image) -> None:
        av = require("av", extra="video", purpose="Video inference")
        if image.size != (self.stream.width, self.stream.height):
            image = image.crop((0, 0, self.stream.width, self.stream.height))
        frame = av.VideoFrame.from_image(image)
        frame.pts = self.frames
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        os.replace(self.partial, self.path)


def frame_record(frame: Frame, found: ImageDetections, names: Sequence[str], label_to_category: Sequence[int],
                 track_ids: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """The JSON line of one frame."""
    labels = [int(label) for label in found.labels]
    record = {
        "frame": frame.index,
        "timestamp": round(frame.timestamp, 6),
        "boxes": [[round(float(v), 3) for v in box] for box in found.boxes],
        "scores": [round(float(s), 6) for s in found.scores],
        "classes": [names[label] for label in labels],
        "category_ids": [int(label_to_category[label]) for label in labels],
    }
    if track_ids is not None:
        record["track_ids"] = [int(t) for t in track_ids]
    return record


class _Tracker:
    """ByteTrack from Roboflow's ``trackers`` package (supervision's own ``sv.ByteTrack`` was removed in
    supervision 0.31): keeps the tracked detections of each frame and their ids."""

    def __init__(self, fps: Fraction) -> None:
        self.sv = require("supervision", extra="track", purpose="inference.track")
        trackers = require("trackers", extra="track", purpose="inference.track")
        self.tracker = trackers.ByteTrackTracker(frame_rate=float(fps))

    def update(self, found: ImageDetections) -> tuple[ImageDetections, np.ndarray]:
        detections = self.sv.Detections(
            xyxy=found.boxes.reshape(-1, 4), confidence=found.scores, class_id=found.labels.astype(int)
        )
        tracked = self.tracker.update(detections)  # every detection, reordered; id -1: in no confirmed track
        if tracked.tracker_id is None:
            return found, np.full(len(found), -1, dtype=np.int64)
        ids = np.asarray(tracked.tracker_id, dtype=np.int64).reshape(-1)
        return ImageDetections(found.image_id, tracked.xyxy, tracked.confidence, tracked.class_id), ids


def annotate_video(
    source: str | Path,
    out_dir: str | Path,
    detect: Detect,
    class_names: Sequence[str],
    label_to_category: Sequence[int],
    *,
    conf_threshold: float,
    batch_size: int = 1,
    color_map: Mapping[str, str] | None = None,
    outline_width: int = 3,
    track: bool = False,
    live: bool = False,
    name: str | None = None,
) -> VideoResult:
    """Detect on every frame of ``source`` (a file, or with ``live`` a camera / network stream), write the
    annotated video and the JSON lines into ``out_dir``, with a progress bar (frames per second). Ctrl-C ends
    the loop early with both files complete (``interrupted`` is then true)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with VideoReader(source, live=live) as reader:
        stem = name or Path(str(source)).stem
        suffix = Path(str(source)).suffix.lower() if not live and Path(str(source)).suffix else ".mp4"
        video = AnnotatedVideo(out / f"{stem}_annotated{suffix}", reader.codec, reader.fps, reader.size,
                               reader.bit_rate)  # fmt: skip
        jsonl = out / f"{stem}.jsonl"
        colors = class_colors(list(class_names), color_map)
        tracker = _Tracker(reader.fps) if track else None
        frames = detections = 0
        interrupted = False
        with (
            open(jsonl, "w", encoding="utf-8") as lines,
            Progress(f"video {Path(str(source)).name}", total=reader.frames or None, unit="frame") as progress,
        ):
            try:
                for batch in batches(iter(reader), batch_size):
                    found = detect([frame.image for frame in batch])
                    for frame, result in zip(batch, found, strict=True):
                        detections += _write_frame(
                            frame, result.filter(conf_threshold), video, lines, class_names, label_to_category,
                            colors, outline_width, tracker,
                        )  # fmt: skip
                        frames += 1
                    progress.update(len(batch))
            except KeyboardInterrupt:
                interrupted = True
                log.warning("interrupted: %s stops after %d frames; the video and JSON lines hold them", stem, frames)
            finally:
                video.close()
    return VideoResult(video.path, jsonl, frames, detections, interrupted)


def run_videos(
    videos: Sequence[Path], stream: str | None, out_dir: Path, detect: Detect, class_names: Sequence[str],
    label_to_category: Sequence[int], cfg: Any, batch_size: int,
) -> tuple[int, int]:  # fmt: skip
    """Every video file, then the live ``stream``, through :func:`annotate_video` with the settings of the
    ``inference`` section ``cfg``; Ctrl-C stops the one running and skips the rest. Returns (frames, detections)."""
    frames = detections = 0
    sources = [(str(v), False, None) for v in videos] + ([(stream, True, "stream")] if stream else [])
    for source, live, name in sources:
        result = annotate_video(
            source, out_dir, detect, class_names, label_to_category, conf_threshold=cfg.conf_threshold,
            batch_size=batch_size, color_map=cfg.color_map, outline_width=cfg.outline_width, track=cfg.track,
            live=live, name=name,
        )  # fmt: skip
        frames, detections = frames + result.frames, detections + result.detections
        log.info("%s: %d frames → %s, %s", source, result.frames, result.video, result.jsonl)
        if result.interrupted:
            break
    return frames, detections


def _write_frame(
    frame: Frame,
    found: ImageDetections,
    video: AnnotatedVideo,
    lines: IO[str],
    names: Sequence[str],
    label_to_category: Sequence[int],
    colors: Mapping[str, str],
    outline_width: int,
    tracker: _Tracker | None,
) -> int:
    track_ids = None
    if tracker is not None:
        found, track_ids = tracker.update(found)
    labels = [names[int(label)] for label in found.labels]
    if track_ids is None:
        shown = labels
    else:
        shown = [f"{n} #{t}" if t >= 0 else n for n, t in zip(labels, track_ids, strict=True)]
    tag_colors = {s: colors[n] for s, n in zip(shown, labels, strict=True)}
    video.write(draw_detections(frame.image, found.boxes, found.scores, shown, color_map=tag_colors,
                                outline_width=outline_width))  # fmt: skip
    lines.write(json.dumps(frame_record(frame, found, names, label_to_category, track_ids)) + "\n")
    lines.flush()  # a reader (or a crash) sees whole lines only
    return len(found)


def batches(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    """Consecutive frames in lists of ``size`` (the last may be shorter)."""
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
