"""What an exported model carries besides its weights: classes, category ids, input size, outputs.

``rtdetr export`` stores it in the ONNX file's ``metadata_props`` (key ``rtdetr_tao``) and in a
sidecar ``<model>.json``; ``rtdetr-deploy gen_trt_engine`` copies it next to the engine, since a
TensorRT plan has no room for it. Torch-free.

The exported graph's interface:
- input ``images``: float32 [N, 3, H, W], RGB in [0, 1], no mean/std;
- input ``orig_target_sizes``: float32 [N, 2], the (w, h) the boxes are scaled to (the original
  image size; for a letterboxed input, ``input_size * original / resized``) — end-to-end graphs only;
- outputs ``labels`` int64 [N, K], ``boxes`` float32 [N, K, 4] (xyxy pixels), ``scores`` float32
  [N, K] (end-to-end), or ``pred_logits`` [N, Q, C] and ``pred_boxes`` [N, Q, 4] (normalized
  cxcywh) for the raw variant.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import DataError
from .io import atomic_write_json

METADATA_KEY = "rtdetr_tao"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelMetadata:
    """Facts a runtime needs to turn the graph's outputs into labelled detections."""

    class_names: list[str]
    label_to_category: list[int]
    input_size: tuple[int, int]  # (h, w)
    outputs: Literal["postprocessed", "raw"] = "postprocessed"
    num_select: int = 300
    preserve_aspect_ratio: bool = False
    model: dict[str, Any] = field(default_factory=dict)
    spec_sha256: str = ""
    category_ids: list[int] = field(default_factory=list)  # ids the annotations define; []: unknown (older files)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> ModelMetadata:
        try:
            data = json.loads(text)
            data["input_size"] = tuple(data["input_size"])
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{source}: unreadable rtdetr_tao model metadata ({exc}); re-export the model") from None


def sidecar_path(model_path: str | Path) -> Path:
    """``model.onnx`` → ``model.onnx.json``; ``model.engine`` → ``model.engine.json``."""
    path = Path(model_path)
    return path.with_name(path.name + ".json")


def write_sidecar(model_path: str | Path, metadata: ModelMetadata) -> Path:
    path = sidecar_path(model_path)
    atomic_write_json(path, json.loads(metadata.to_json()))
    return path


def read_metadata(model_path: str | Path) -> ModelMetadata:
    """The metadata of an exported model: the sidecar JSON, else (ONNX) the file's metadata_props."""
    path = Path(model_path)
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        return ModelMetadata.from_json(sidecar.read_text(encoding="utf-8"), str(sidecar))
    if path.suffix == ".onnx" and path.is_file():
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        for prop in model.metadata_props:
            if prop.key == METADATA_KEY:
                return ModelMetadata.from_json(prop.value, str(path))
    raise DataError(
        f"{path} has no rtdetr_tao metadata (no {sidecar.name}, no ONNX metadata_props); export it with "
        "`rtdetr export`, and keep the .json file next to a TensorRT engine"
    )
