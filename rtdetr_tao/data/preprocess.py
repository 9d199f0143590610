"""Evaluation preprocessing without PyTorch, shared by ``rtdetr`` and ``rtdetr-deploy`` so that every runtime sees
the same pixels: RGB, bilinear resize (PIL's, which torchvision's ``Resize`` also uses on PIL images) to the model
input, or a letterbox (aspect ratio kept, zero padding right and bottom), values in [0, 1], no mean/std.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..eval.postprocess import Letterbox
from .sources import resolve_file, resolve_image_dir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def load_rgb(path: str | Path) -> Image.Image:
    """The image at ``path`` as RGB; a missing or unreadable file is a :class:`DataError` naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def source_images(uri: str, cache_dir: str | None = None) -> list[Path]:
    """The images of one inference or calibration source: a single image file (local or ``s3://``), else every
    image under the folder, archive or ``s3://`` prefix, sorted."""
    if uri.lower().endswith(IMAGE_SUFFIXES):
        return [resolve_file(uri, cache_dir)]
    return list_images(resolve_image_dir(uri, cache_dir))


def to_model_input(
    image: Image.Image, input_size: tuple[int, int], preserve_aspect_ratio: bool = False
) -> tuple[np.ndarray, Letterbox | None]:
    """PIL RGB image → (float32 [3, H, W] in [0, 1], the letterbox when ``preserve_aspect_ratio``).

    ``input_size`` is (H, W). Stretched: the image is resized to exactly (W, H). Letterboxed: scaled to fit, placed
    top-left on a black canvas; the :class:`Letterbox` maps boxes back to the original image.
    """
    height, width = input_size
    letterbox = None
    if preserve_aspect_ratio:
        letterbox = Letterbox.fit(image.size, (width, height))
        resized = image.resize(letterbox.resized_size, Image.BILINEAR)
        canvas = Image.new("RGB", (width, height))
        canvas.paste(resized, letterbox.offset)
        image = canvas
    else:
        image = image.resize((width, height), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return np.ascontiguousarray(array), letterbox
