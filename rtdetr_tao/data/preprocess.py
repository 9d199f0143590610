"""Evaluation preprocessing without PyTorch, shared by ``rtdetr`` and ``rtdetr-deploy`` so that every runtime sees
the same pixels: RGB, bilinear resize (PIL's, which torchvision's ``Resize`` also uses on PIL images) to the model
input, or a letterbox (aspect ratio kept, zero padding right and bottom), values in [0, 1], no mean/std.

Every image is read by :func:`load_rgb` (training, evaluation, inference, ``rtdetr-deploy`` and the Predictor):
the EXIF orientation is applied (boxes from Roboflow, CVAT and most tools refer to the image as displayed), and
images with more than ``MAX_IMAGE_PIXELS`` pixels are refused before they are decoded. :func:`to_rgb` scales
other pixel formats to 8-bit RGB: 16/32-bit integer grey (``I;16``, ``I``) by 255/65535, float grey (``F``) taken
as [0, 1] when its maximum is at most 1, else as [0, 255]; palette, grey, CMYK and alpha images as PIL converts
them (alpha dropped).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError
from ..eval.postprocess import Letterbox
from .sources import resolve_file, resolve_image_dir

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


MAX_IMAGE_PIXELS = 100_000_000
"""The largest image read (width x height), e.g. 10000 x 10000; larger files are refused before decoding."""


def load_rgb(path: str | Path) -> Image.Image:
    """The image at ``path`` as 8-bit RGB in its displayed (EXIF) orientation; a missing, unreadable or too large
    file is a :class:`DataError` naming it."""
    too_large = (
        f"more than the limit of {MAX_IMAGE_PIXELS} pixels (rtdetr_tao.data.preprocess.MAX_IMAGE_PIXELS); downscale it"
    )
    try:
        with warnings.catch_warnings(record=True) as caught:  # PIL's warnings about damaged metadata: one log line
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                with Image.open(path) as image:
                    width, height = image.size
                    if width * height > MAX_IMAGE_PIXELS:
                        raise DataError(f"image {path} is {width}x{height} = {width * height} pixels, {too_large}")
                    ImageOps.exif_transpose(image, in_place=True)  # no copy when there is nothing to turn
                    return to_rgb(image)
            finally:
                for warning in caught:
                    log.warning("image %s: %s", path, warning.message)
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except Image.DecompressionBombError:  # PIL's own limit, above ours, stops it in Image.open
        raise DataError(f"image {path} has {too_large}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"cannot read image {path}: {type(exc).__name__}: {exc}".rstrip(": ")) from None


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, with high-bit-depth and float grey scaled (not clipped) to [0, 255]."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)
    elif image.mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        grey = np.nan_to_num(grey, nan=0.0, posinf=0.0, neginf=0.0)
        grey = grey * 255.0 if grey.size and grey.max() <= 1.0 else grey
    else:
        return image.convert("RGB")
    return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L").convert("RGB")


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def named_images(uris: list[str], cache_dir: str | None = None) -> list[tuple[Path, str]]:
    """(path, name relative to its source as POSIX) of every image of ``uris``, in order: a single image file
    (local or ``s3://``) is named by its file name, a folder, archive or ``s3://`` prefix gives every image under
    it, sorted."""
    named: list[tuple[Path, str]] = []
    for uri in uris:
        if uri.lower().endswith(IMAGE_SUFFIXES):
            path = resolve_file(uri, cache_dir)
            named.append((path, path.name))
        else:
            folder = resolve_image_dir(uri, cache_dir)
            named += [(p, p.relative_to(folder).as_posix()) for p in list_images(folder)]
    return named


def source_images(uri: str, cache_dir: str | None = None) -> list[Path]:
    """The image paths of one inference or calibration source (see :func:`named_images`)."""
    return [path for path, _ in named_images([uri], cache_dir)]


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
