"""``dataset``: data sources, loader settings and augmentation (TAO's ``RTDatasetConfig``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from .fields import Section, spec_field

AUTO_BATCH_SIZE = 4
"""The batch size when every applicable ``batch_size`` key is -1."""


def resolve_batch_size(*candidates: int) -> int:
    """The one rule for ``batch_size: -1``: the first candidate that is not -1, else AUTO_BATCH_SIZE (4).

    Candidates go from the most specific key to the least, e.g. (evaluate.batch_size, dataset.batch_size)."""
    return next((c for c in candidates if c != -1), AUTO_BATCH_SIZE)


class DataSource(Section):
    """One COCO source: an image folder or ``images.tar.gz`` (local or ``s3://``) and its annotations."""

    image_dir: str = spec_field(
        ...,
        path="images",
        min_length=1,
        description="Image folder, .tar/.tar.gz/.tgz/.zip archive or s3:// prefix or archive.",
    )
    json_file: str = spec_field(..., path="file", min_length=1, description="COCO annotation JSON, local or s3://.")


class CalibrationSource(Section):
    """Images for quantization calibration; the annotations are optional."""

    image_dir: str = spec_field(
        ..., path="images", min_length=1, description="Image folder or .tar/.tar.gz/.tgz/.zip archive, local or s3://."
    )
    json_file: str | None = spec_field(None, path="file", description="Optional COCO JSON (enables before/after mAP).")


class InferSource(Section):
    """Inference images and videos (folders, archives, image or video files), a live stream, and the class-name
    file."""

    image_dir: list[str] = spec_field(
        ...,
        path="images",
        description="Image folders, archives, image files or video files (mp4, avi, mov, mkv; folders may hold "
        "videos too), local or s3://; [] with stream set.",
    )
    classmap: str | None = spec_field(
        None,
        path="file",
        description="Class names, local or s3://: one per category in id order, or TAO's one per id 0..max; "
        "null: names from the checkpoint.",
    )
    stream: str | None = spec_field(
        None,
        description="A camera or network stream read with FFmpeg (rtsp://..., http(s)://..., /dev/video0); "
        "inference runs until the stream ends or Ctrl-C and writes videos/stream_annotated.mp4 and "
        "videos/stream.jsonl. Needs pip install 'rtdetr-tao[video]'.",
    )

    @model_validator(mode="after")
    def _something_to_read(self) -> InferSource:
        if not self.image_dir and not self.stream:
            raise ValueError("image_dir is empty: list image folders or videos, or set stream (a camera or stream URL)")
        return self

    @field_validator("image_dir", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class AugmentationSpec(Section):
    """Training augmentation (the RT-DETR recipe) and the input sizes."""

    multi_scales: list[int | list[int]] = spec_field(
        [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800],
        description="Batch-level random resize sizes: squares (ints) or [h, w] pairs, multiples of 32; [] disables.",
        automl=False,
    )
    train_spatial_size: list[int] = spec_field(
        [640, 640], min_length=2, max_length=2, description="Training input [h, w], multiples of 32.", automl=False
    )
    eval_spatial_size: list[int] = spec_field(
        [640, 640], min_length=2, max_length=2, description="Evaluation input [h, w], multiples of 32.", automl=False
    )
    distortion_prob: float = spec_field(
        0.8, ge=0.0, le=1.0, description="Probability of RandomPhotometricDistort.", automl=True
    )
    iou_crop_prob: float = spec_field(0.8, ge=0.0, le=1.0, description="Probability of RandomIoUCrop.", automl=True)
    zoom_out_prob: float = spec_field(0.5, ge=0.0, le=1.0, description="Probability of RandomZoomOut.")
    zoom_out_max_scale: float = spec_field(4.0, ge=1.0, description="Largest canvas/image ratio of RandomZoomOut.")
    hflip_prob: float = spec_field(0.5, ge=0.0, le=1.0, description="Probability of RandomHorizontalFlip.")
    preserve_aspect_ratio: bool = spec_field(
        False, description="Resize keeping the aspect ratio (pad bottom/right) instead of stretching."
    )
    stop_epoch: int | None = spec_field(
        None,
        ge=0,
        description="Dynamic augmentation: from this 0-based epoch on, photometric distortion, zoom-out, IoU crop "
        "and multi-scale are off; null: the recipe's (rtdetrv2: the last two epochs, the paper's choice; deim: "
        "DEIM's policy.epoch[2], 117 of 120 epochs for R18/R34, 58 of 60 for R50/R101, scaled to num_epochs).",
    )
    mosaic_prob: float | None = spec_field(
        None,
        ge=0.0,
        le=1.0,
        description="Dense O2O: probability of a 2x2 mosaic of the image and three random others (random affine "
        "after; no zoom-out or IoU crop on a mosaic); null: the recipe's (rtdetrv2: 0; deim: 0.5, DEIM's "
        "configs/base/rt_deim.yml transforms.mosaic_prob).",
        search_range=(0.0, 1.0),
    )
    mosaic_epochs: list[int] | None = spec_field(
        None,
        min_length=2,
        max_length=2,
        description="Dense O2O: [first, end) 0-based epochs with mosaic; strong augmentation starts at the first "
        "(DEIM's 4-stage policy); null: the recipe's (DEIM's policy.epoch[:2], [4, 64] of 120 epochs for "
        "R18/R34, [4, 34] of 60 for R50/R101, scaled to num_epochs).",
        automl=False,
    )
    mixup_prob: float | None = spec_field(
        None,
        ge=0.0,
        le=1.0,
        description="Dense O2O: probability that a batch is mixed with itself rolled by one (ratio in [0.45, 0.55], "
        "both images' boxes kept); null: the recipe's (rtdetrv2: 0; deim: 0.5, DEIM's collate_fn.mixup_prob).",
        search_range=(0.0, 1.0),
    )
    mixup_epochs: list[int] | None = spec_field(
        None,
        min_length=2,
        max_length=2,
        description="Dense O2O: [first, end) 0-based epochs with mixup; null: the recipe's (DEIM's "
        "collate_fn.mixup_epochs, the same as mosaic_epochs).",
        automl=False,
    )

    @field_validator("train_spatial_size", "eval_spatial_size")
    @classmethod
    def _multiple_of_32(cls, value: list[int]) -> list[int]:
        if any(v <= 0 or v % 32 for v in value):
            raise ValueError(f"{value}: both sides must be positive multiples of 32")
        return value

    @field_validator("mosaic_epochs", "mixup_epochs")
    @classmethod
    def _epoch_window(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not 0 <= value[0] <= value[1]:
            raise ValueError(f"{value}: give [first, end) with 0 <= first <= end")
        return value

    @field_validator("multi_scales")
    @classmethod
    def _scales_multiple_of_32(cls, value: list[Any]) -> list[Any]:
        for size in value:
            sides = size if isinstance(size, list) else [size]
            if len(sides) != (2 if isinstance(size, list) else 1) or any(s <= 0 or s % 32 for s in sides):
                raise ValueError(f"multi_scales entry {size}: give a size or [h, w], multiples of 32")
        return value


class DatasetSpec(Section):
    """Where the data comes from and how it is loaded."""

    train_data_sources: list[DataSource] | None = spec_field(
        None, description="One or more COCO training sources.", automl=False
    )
    val_data_sources: DataSource | None = spec_field(None, description="COCO validation source.", automl=False)
    test_data_sources: DataSource | None = spec_field(None, description="COCO source for evaluate.", automl=False)
    infer_data_sources: InferSource | None = spec_field(
        None, description="Images for inference and the class-name file.", automl=False
    )
    quant_calibration_data_sources: CalibrationSource | None = spec_field(
        None, description="Images for quantization calibration.", automl=False
    )
    batch_size: int = spec_field(
        4,
        ge=-1,
        le=1024,
        description=f"Per-device batch size for training and evaluation; -1 (evaluate, inference and deploy only): "
        f"{AUTO_BATCH_SIZE}.",
        automl=True,
        math_cond="^ 2",
        search_range=(2, 16),
        schema_extra={"not": {"const": 0}},
    )
    workers: int = spec_field(8, ge=0, le=64, description="Data-loader worker processes per device.", automl=False)
    remap_mscoco_category: bool = spec_field(
        False, description="COCO's 91 category ids map to 80 contiguous labels (and back on output)."
    )
    pin_memory: bool = spec_field(True, description="Page-locked host memory for faster host-to-GPU copies.")
    dataset_type: Literal["serialized", "default"] = spec_field(
        "serialized",
        description="TAO's annotation storage.",
    )
    num_classes: int = spec_field(
        80, ge=1, description="Number of categories, or TAO's 'max category id + 1'.", automl=False
    )
    eval_class_ids: list[int] | None = spec_field(
        None, description="Original category ids to evaluate on; null: all.", automl=False
    )
    skip_corrupt_images: bool = spec_field(
        False, description="Skip (and count) unreadable images instead of failing on the first one."
    )
    cache_dir: str | None = spec_field(
        None,
        path="output",
        description="Where s3:// downloads and extracted archives go; null: ~/.cache/rtdetr_tao.",
        automl=False,
    )
    augmentation: AugmentationSpec = spec_field(AugmentationSpec(), description="Augmentation settings.", automl=False)

    @field_validator("batch_size")
    @classmethod
    def _nonzero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 is not a batch size: use a positive number (or -1 for the default)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _train_sources_list(cls, data: Any) -> Any:
        # TAO allows a single mapping where a list is expected.
        if isinstance(data, dict) and isinstance(data.get("train_data_sources"), dict):
            data = {**data, "train_data_sources": [data["train_data_sources"]]}
        return data
