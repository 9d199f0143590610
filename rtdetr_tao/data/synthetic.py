"""A synthetic COCO detection dataset: shapes on cluttered backgrounds, for the quick start and the tests.

Classes are shapes (rectangle, ellipse, triangle, cross), not colours: every object gets a random colour, size,
aspect and position, objects may overlap, and backgrounds are noisy gradients with distractor lines, so a detector
has to learn shape. Category ids are deliberately not 0-based and not contiguous (1, 3, 5, 7), as in real COCO
files. Deterministic for a seed.

``python -m rtdetr_tao.data.synthetic OUT_DIR [--train N] [--val N] [--size W H] [--archive]`` writes
``OUT_DIR/{train,val}/images/`` (or ``images.tar.gz``) and ``annotations.json``.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..io import atomic_write_text

CATEGORIES = {1: "rectangle", 3: "ellipse", 5: "triangle", 7: "cross"}


@dataclass(frozen=True)
class SyntheticSplit:
    """Where a split was written."""

    image_dir: Path
    json_file: Path
    num_images: int
    num_boxes: int


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    low, high = rng.uniform(0, 160, 3), rng.uniform(60, 255, 3)
    t = np.linspace(0, 1, width)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, height)[:, None, None]
    base = low + (high - low) * t
    noise = rng.normal(0, 18, (height, width, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 7)):
        points = [tuple(rng.uniform(0, [width, height])) for _ in range(2)]
        draw.line(points, fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=int(rng.integers(1, 4)))
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, box: tuple[float, ...], color: tuple[int, ...]) -> None:
    x1, y1, x2, y2 = box
    if name == "rectangle":
        draw.rectangle(box, fill=color)
    elif name == "ellipse":
        draw.ellipse(box, fill=color)
    elif name == "triangle":
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=color)
    else:  # cross: two bars spanning the box
        w, h = x2 - x1, y2 - y1
        draw.rectangle((x1 + 0.35 * w, y1, x2 - 0.35 * w, y2), fill=color)
        draw.rectangle((x1, y1 + 0.35 * h, x2, y2 - 0.35 * h), fill=color)


def _image(rng: np.random.Generator, size: tuple[int, int]) -> tuple[Image.Image, list[dict]]:
    width, height = size
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    objects = []
    for _ in range(rng.integers(1, 4)):
        category = int(rng.choice(list(CATEGORIES)))
        side = rng.uniform(0.18, 0.45) * min(width, height)
        w, h = side * rng.uniform(0.7, 1.3), side * rng.uniform(0.7, 1.3)
        x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        _draw_shape(draw, CATEGORIES[category], (x1, y1, x1 + w, y1 + h), color)
        objects.append({"category_id": category, "bbox": [round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)]})
    return image, objects


def write_split(
    out_dir: str | Path, num_images: int, *, size: tuple[int, int] = (160, 160), seed: int = 0, archive: bool = False
) -> SyntheticSplit:
    """``num_images`` images of ``size`` (w, h) with ``annotations.json`` under ``out_dir``; as
    ``images.tar.gz`` when ``archive``."""
    out = Path(out_dir)
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        image, objects = _image(rng, size)
        name = f"{image_id:06d}.jpg"
        image.save(folder / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": size[0], "height": size[1]})
        for obj in objects:
            w, h = obj["bbox"][2:]
            annotations.append(
                {**obj, "id": len(annotations) + 1, "image_id": image_id, "area": round(w * h, 2), "iscrowd": 0}
            )
    categories = [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in CATEGORIES.items()]
    json_file = out / "annotations.json"
    atomic_write_text(json_file, json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    image_dir = folder
    if archive:
        image_dir = out / "images.tar.gz"
        with tarfile.open(image_dir, "w:gz") as tar:
            for path in sorted(folder.iterdir()):
                tar.add(path, arcname=path.name)
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    return SyntheticSplit(image_dir, json_file, num_images, len(annotations))


def moving_shapes(num_frames: int, *, size: tuple[int, int] = (160, 160), seed: int = 0) -> list[Image.Image]:
    """``num_frames`` frames of ``size`` (w, h): 1-3 shapes crossing one background in straight lines."""
    width, height = size
    rng = np.random.default_rng(seed)
    background = _background(rng, width, height)
    shapes = []
    for _ in range(rng.integers(1, 4)):
        side = rng.uniform(0.2, 0.4) * min(width, height)
        w, h = side * rng.uniform(0.8, 1.2), side * rng.uniform(0.8, 1.2)
        start = rng.uniform(0, [width - w, height - h])
        end = rng.uniform(0, [width - w, height - h])
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        shapes.append((CATEGORIES[int(rng.choice(list(CATEGORIES)))], w, h, start, end, color))
    frames = []
    for index in range(num_frames):
        t = index / max(num_frames - 1, 1)
        frame = background.copy()
        draw = ImageDraw.Draw(frame)
        for name, w, h, start, end, color in shapes:
            x1, y1 = start + (end - start) * t
            _draw_shape(draw, name, (x1, y1, x1 + w, y1 + h), color)
        frames.append(frame)
    return frames


def write_video(
    path: str | Path, num_frames: int, *, size: tuple[int, int] = (160, 160), fps: int = 10, seed: int = 0,
    codec: str = "mpeg4",
) -> Path:  # fmt: skip
    """:func:`moving_shapes` as a video file (container from the suffix; needs PyAV)."""
    from ..errors import require

    av = require("av", extra="video", purpose="Writing a synthetic video")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for image in moving_shapes(num_frames, size=size, seed=seed):
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def synthesize(
    out_dir: str | Path,
    *,
    num_train: int = 256,
    num_val: int = 64,
    size: tuple[int, int] = (160, 160),
    seed: int = 0,
    archive: bool = False,
) -> dict[str, SyntheticSplit]:
    """Train and val splits under ``out_dir/train`` and ``out_dir/val`` (different seeds)."""
    out = Path(out_dir)
    return {
        "train": write_split(out / "train", num_train, size=size, seed=seed, archive=archive),
        "val": write_split(out / "val", num_val, size=size, seed=seed + 1, archive=archive),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rtdetr_tao.data.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=256, help="training images")
    parser.add_argument("--val", type=int, default=64, help="validation images")
    parser.add_argument("--size", type=int, nargs=2, default=(160, 160), metavar=("W", "H"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--archive", action="store_true", help="write images.tar.gz instead of a folder")
    args = parser.parse_args(argv)
    splits = synthesize(
        args.out_dir, num_train=args.train, num_val=args.val, size=tuple(args.size), seed=args.seed,
        archive=args.archive,
    )  # fmt: skip
    for name, split in splits.items():
        print(f"{name}: {split.num_images} images, {split.num_boxes} boxes → {split.image_dir}, {split.json_file}")


if __name__ == "__main__":
    main()
