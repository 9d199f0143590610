"""COCO-format detection datasets (pycocotools), with annotations cleaned as the reference does.

Crowd boxes are dropped, boxes are clipped to the image, boxes without area after clipping are dropped (each
counted, one warning per file). Images without boxes stay as negatives. The file is checked first: a duplicate
image or annotation id, an image without id, file name or positive width/height, and an annotation whose ``bbox``
is not four finite numbers are errors naming the ids and files. An image file whose size (after its EXIF
orientation) differs from the ``width``/``height`` of its JSON entry is an error when the sample is read: its boxes
would not land on the objects. A category id outside the category map
is an error naming the annotation. Samples are addressed as ``(index, epoch, batch)`` keys, and all randomness of
a sample is drawn from a generator seeded by ``(seed, epoch, index)``, so that the data of a step does not depend
on worker count or on where a run was resumed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..config.dataset import AugmentationSpec, DataSource
from ..errors import DataError
from .categories import CategoryMap
from .locate import ImageLocator
from .preprocess import load_rgb, to_model_input
from .sources import resolve_file, resolve_image_dir
from .transforms import DenseO2O, Sample, TrainTransform

log = logging.getLogger(__name__)

SampleKey = tuple[int, int, int]
"""(dataset index, epoch, batch number)"""


def load_coco(json_file: str, cache_dir: str | None = None) -> Any:
    """A ``pycocotools.coco.COCO`` of ``json_file`` (local or s3://), quietly; a broken file is a DataError."""
    from pycocotools.coco import COCO

    path = resolve_file(json_file, cache_dir)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except Exception as exc:
        raise DataError(f"cannot read COCO annotations {json_file}: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class ImageRecord:
    """One image: file (None: missing, skipped), size (w, h), boxes [n, 4] xyxy pixels (float32), labels [n]
    (int64)."""

    image_id: int
    path: Path | None
    size: tuple[int, int]
    boxes: np.ndarray
    labels: np.ndarray


def parse_annotations(
    coco: Any, image_dir: Path, category_map: CategoryMap, source: str, *, skip_missing: bool = False
) -> list[ImageRecord]:
    """Records of every image of ``coco``, sorted by id, with cleaned boxes and contiguous labels; each file is
    found by :class:`~rtdetr_tao.data.locate.ImageLocator`. A missing file is an error, or with ``skip_missing``
    a record without path (warned about once, with the count)."""
    check_coco(coco.dataset, source)
    to_label = category_map.category_to_label
    locator = ImageLocator(image_dir, source)
    records, dropped, missing = [], {"crowd": 0, "empty after clipping": 0}, []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        try:
            path = locator.find(str(info["file_name"]))
        except DataError as error:
            if not skip_missing:
                raise DataError(f"{error}; set dataset.skip_corrupt_images=true to skip such images") from None
            path = None
            missing.append(str(error))
        width, height = int(info["width"]), int(info["height"])
        boxes, labels = [], []
        for ann in coco.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0):
                dropped["crowd"] += 1
                continue
            if ann["category_id"] not in to_label:
                raise DataError(
                    f"{source}: annotation {ann.get('id')} of image {image_id} has category_id {ann['category_id']}, "
                    f"which is not a class of this model (category ids {list(category_map.label_to_category)}); "
                    "fix the annotation or dataset.num_classes"
                )
            x, y, w, h = ann["bbox"]  # four finite numbers (check_coco)
            x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if x2 <= x1 or y2 <= y1:
                dropped["empty after clipping"] += 1
                continue
            boxes.append((x1, y1, x2, y2))
            labels.append(to_label[ann["category_id"]])
        records.append(
            ImageRecord(
                image_id,
                path,
                (width, height),
                np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                np.asarray(labels, dtype=np.int64),
            )
        )
    if missing:
        log.warning("%s: skipping %d missing images, e.g. %s", source, len(missing), missing[0])
    if any(dropped.values()):
        log.warning("%s: dropped boxes: %s", source, ", ".join(f"{n} {why}" for why, n in dropped.items() if n))
    return records


def check_coco(data: dict[str, Any], source: str) -> None:
    """Raise a :class:`DataError` naming the ids and files when ``data`` (a COCO dict) has a duplicate image or
    annotation id, an image without a usable id / file_name / width / height, or an annotation whose ``bbox`` is not
    four finite numbers (pycocotools would silently keep only the last of duplicate ids)."""
    images: dict[Any, dict[str, Any]] = {}
    for info in data.get("images") or []:
        if not isinstance(info, dict) or not isinstance(info.get("id"), int) or isinstance(info.get("id"), bool):
            raise DataError(f"{source}: image entry {_short(info)} has no integer 'id'")
        if not isinstance(info.get("file_name"), str) or not info["file_name"]:
            raise DataError(f"{source}: image {info['id']} has no 'file_name'")
        if not all(_is_number(info.get(k)) and info[k] > 0 for k in ("width", "height")):
            raise DataError(
                f"{source}: image {info['id']} ({info['file_name']}) has no positive width and height "
                f"(got {info.get('width')!r} x {info.get('height')!r})"
            )
        first = images.setdefault(info["id"], info)
        if first is not info:
            raise DataError(
                f"{source}: image id {info['id']} is used twice, by {first['file_name']} and {info['file_name']}; "
                "give every image its own id"
            )
    seen: dict[Any, dict[str, Any]] = {}
    for ann in data.get("annotations") or []:
        if not isinstance(ann, dict):
            raise DataError(f"{source}: annotation entry {_short(ann)} is not an object")
        where = f"annotation {ann.get('id')!r} (image {ann.get('image_id')!r})"
        first = seen.setdefault(ann.get("id"), ann)
        if first is not ann:
            names = [
                images.get(a.get("image_id"), {}).get("file_name", f"image {a.get('image_id')!r}") for a in (first, ann)
            ]
            raise DataError(
                f"{source}: annotation id {ann.get('id')!r} is used twice, in {names[0]} and {names[1]}; "
                "give every annotation its own id"
            )
        if "bbox" not in ann:
            raise DataError(f"{source}: {where} has no 'bbox'; give [x, y, width, height] in pixels")
        box = ann["bbox"]
        if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) and math.isfinite(v) for v in box):
            raise DataError(
                f"{source}: {where} has bbox {_short(box)}; it must be four finite numbers [x, y, width, height]"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class CocoDetection(Dataset):
    """Samples ``(image [3, H, W] float in [0, 1], target)`` of a COCO source.

    ``target``: ``image_id`` (int), ``orig_size`` [2] (w, h), ``labels`` [n] int64, ``boxes`` [n, 4] normalised
    cxcywh of the model input, and ``letterbox`` when the aspect ratio is preserved (evaluation only).

    Args:
        train_aug: training augmentation; None: evaluation preprocessing at ``eval_size``.
        stop_epoch: from this epoch on, the strong augmentation is off.
        dense_o2o: DEIM's mosaic schedule (strong augmentation then starts at the first mosaic epoch); mosaic
            partners are drawn from this dataset with the sample's own generator.
        skip_corrupt: unreadable images are skipped (the sample is None, dropped by the collate) instead of failing.
    """

    def __init__(
        self,
        source: DataSource,
        category_map: CategoryMap,
        *,
        train_aug: AugmentationSpec | None = None,
        eval_size: tuple[int, int] = (640, 640),
        preserve_aspect_ratio: bool = False,
        stop_epoch: int = 1 << 30,
        seed: int = 0,
        skip_corrupt: bool = False,
        cache_dir: str | None = None,
        dense_o2o: DenseO2O | None = None,
    ) -> None:
        self.coco = load_coco(source.json_file, cache_dir)
        image_dir = resolve_image_dir(source.image_dir, cache_dir)
        self.records = parse_annotations(
            self.coco, image_dir, category_map, source.json_file, skip_missing=skip_corrupt
        )
        self.transform = TrainTransform(train_aug) if train_aug is not None else None
        self.eval_size, self.preserve_aspect_ratio = tuple(eval_size), preserve_aspect_ratio
        self.stop_epoch, self.seed, self.skip_corrupt = stop_epoch, seed, skip_corrupt
        self.dense_o2o = dense_o2o or DenseO2O()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | SampleKey) -> tuple[Tensor, dict[str, Any], SampleKey] | None:
        index, epoch, batch = key if isinstance(key, tuple) else (key, 0, 0)
        record = self.records[index]
        if record.path is None:  # missing, reported when the annotations were read
            return None
        image = self._load(record, "skipping image")
        if image is None:
            return None
        if image.size != record.size:
            raise DataError(
                f"image {record.path} is {image.size[0]}x{image.size[1]} (as displayed, EXIF orientation applied) but "
                f"its annotation (image id {record.image_id}) says {record.size[0]}x{record.size[1]}; its boxes would "
                "not land on the objects: fix width/height and the boxes, or the image"
            )
        target: dict[str, Any] = {"image_id": record.image_id, "orig_size": torch.tensor(image.size)}
        boxes, labels = torch.from_numpy(record.boxes), torch.from_numpy(record.labels)
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
                strong = self.dense_o2o.strong_start <= epoch < self.stop_epoch
                partners: list[Sample] = []
                if strong and self.dense_o2o.mosaic_now(epoch) and torch.rand(()) < self.dense_o2o.mosaic_prob:
                    picks = torch.randint(len(self.records), (3,)).tolist()
                    partners = [self._partner(i, (image, boxes, labels)) for i in picks]
                tensor, boxes, labels = self.transform(image, boxes, labels, strong=strong, mosaic_with=partners)
        else:
            array, letterbox = to_model_input(image, self.eval_size, self.preserve_aspect_ratio)
            tensor = torch.from_numpy(array)
            width, height = image.size
            if letterbox is None:
                scale = torch.tensor([width, height, width, height], dtype=torch.float32)
            else:
                (in_w, in_h), (rw, rh) = letterbox.input_size, letterbox.resized_size
                scale = torch.tensor([in_w * width / rw, in_h * height / rh] * 2, dtype=torch.float32)
                target["letterbox"] = letterbox
            x1, y1, x2, y2 = (boxes / scale).unbind(-1)
            boxes = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)
        target |= {"labels": labels, "boxes": boxes}
        return tensor, target, (index, epoch, batch)

    def _partner(self, index: int, fallback: Sample) -> Sample:
        """A mosaic partner (image, boxes, labels); an unreadable one is the sample itself under skip_corrupt."""
        record = self.records[index]
        image = self._load(record, "mosaic: skipping image")
        if image is None:
            return fallback
        return image, torch.from_numpy(record.boxes), torch.from_numpy(record.labels)

    def _load(self, record: ImageRecord, skipping: str) -> Image.Image | None:
        """The image of ``record``; an unreadable one raises a DataError, or under skip_corrupt is logged as
        ``skipping`` and gives None."""
        try:
            return load_rgb(record.path)
        except DataError as error:
            if not self.skip_corrupt:
                raise DataError(f"{error}; set dataset.skip_corrupt_images=true to skip such images") from None
            log.warning("%s %s: %s", skipping, record.image_id, error)
            return None
