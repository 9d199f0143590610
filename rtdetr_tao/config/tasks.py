"""``evaluate``, ``inference`` and ``export`` sections."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from .dataset import AUTO_BATCH_SIZE
from .fields import Section, spec_field

CHECKPOINT_HELP = (
    "our .pth checkpoint, official RT-DETRv2 weights, a Hugging Face directory, an exported .onnx, or a "
    "weights-catalog name (rtdetr weights list)"
)


def _model_job_section(noun: str, verb: str, action: str) -> type[Section]:
    """The keys ``evaluate`` and ``inference`` share, first in both (where the job runs, which model, where its
    results go, the batch size), worded for the job: GPUs for ``noun``, the model to ``verb``, results under
    ``results_dir/action``."""

    class ModelJobSection(Section):
        num_gpus: int = spec_field(1, ge=1, description=f"GPUs for {noun}.", popular=True, automl=False)
        gpu_ids: list[int] = spec_field([0], description="GPU indices.", popular=True, automl=False)
        num_nodes: int = spec_field(1, ge=1, description=f"Nodes for {noun}.", popular=True, automl=False)
        checkpoint: str | None = spec_field(
            None, path="model", description=f"Model to {verb}: {CHECKPOINT_HELP}.", automl=False
        )
        trt_engine: str | None = spec_field(
            None,
            path="model",
            description=f"rtdetr-deploy: TensorRT engine (.engine/.plan) or .onnx to {verb}.",
            automl=False,
        )
        results_dir: str | None = spec_field(
            None, path="output", description=f"Output folder; null: results_dir/{action}.", automl=False
        )
        batch_size: int = spec_field(
            -1, ge=-1, description=f"Batch size; -1: dataset.batch_size, or {AUTO_BATCH_SIZE} when that is -1 too."
        )

    return ModelJobSection


class EvaluateSpec(_model_job_section("evaluation", "evaluate", "evaluate")):
    """COCO evaluation of a checkpoint (``rtdetr evaluate``) or an engine (``rtdetr-deploy evaluate``)."""

    input_width: int | None = spec_field(None, ge=32, description="Input width; null: eval_spatial_size.")
    input_height: int | None = spec_field(None, ge=32, description="Input height; null: eval_spatial_size.")
    conf_threshold: float = spec_field(0.0, ge=0.0, le=1.0, description="Score cut-off for kept detections.")
    is_quantized: bool = spec_field(
        False, description="The checkpoint comes from rtdetr quantize (checked against the checkpoint)."
    )


class InferenceSpec(_model_job_section("inference", "run", "inference")):
    """Detections on images: annotated images, KITTI labels and COCO-style JSON."""

    color_map: dict[str, str] | None = spec_field(
        None,
        description="Box colour per class name (a colour name or #rrggbb); others get a palette colour.",
        automl=False,
    )
    conf_threshold: float = spec_field(0.5, ge=0.0, le=1.0, description="Score cut-off for written detections.")
    input_width: int | None = spec_field(
        None, ge=32, description="Input width; null: eval_spatial_size when set, else the checkpoint's trained size."
    )
    input_height: int | None = spec_field(
        None, ge=32, description="Input height; null: eval_spatial_size when set, else the checkpoint's trained size."
    )
    outline_width: int = spec_field(3, ge=1, description="Box outline thickness in pixels.")
    is_quantized: bool = spec_field(
        False, description="The checkpoint comes from rtdetr quantize (checked against the checkpoint)."
    )
    track: bool = spec_field(
        False,
        description="Videos and streams: attach ByteTrack ids to each frame's detections, in the JSON lines "
        "(track_ids) and the drawing (#id). Needs pip install 'rtdetr-tao[track]'.",
    )
    is_internal: bool = spec_field(
        False, description="TAO's internal (NVIDIA) output folder layout: not supported, must stay false."
    )

    @model_validator(mode="after")
    def _not_internal(self) -> InferenceSpec:
        if self.is_internal:
            raise ValueError(
                "inference.is_internal=true (TAO's internal output layout) is not supported; set it to false"
            )
        return self


class ExportSpec(Section):
    """ONNX export."""

    results_dir: str | None = spec_field(
        None, path="output", description="Output folder; null: results_dir/export.", automl=False
    )
    gpu_id: int = spec_field(0, ge=0, description="GPU used for export when on_cpu is false.")
    checkpoint: str | None = spec_field(
        None, path="model", description=f"Model to export: {CHECKPOINT_HELP}.", automl=False
    )
    onnx_file: str | None = spec_field(None, path="output", description="Destination .onnx path.", automl=False)
    on_cpu: bool = spec_field(False, description="Trace on the CPU even when a GPU is present.")
    input_channel: Literal[3] = spec_field(3, description="Input channels (RGB).")
    input_width: int = spec_field(
        640, ge=32, description="Exported input width (multiple of 32); unset: the checkpoint's trained width."
    )
    input_height: int = spec_field(
        640, ge=32, description="Exported input height (multiple of 32); unset: the checkpoint's trained height."
    )
    opset_version: int = spec_field(17, ge=16, le=21, description="ONNX opset (grid_sample needs 16 or newer).")
    batch_size: int = spec_field(-1, ge=-1, description="Fixed batch size; -1: dynamic batch axis.")
    verbose: bool = spec_field(False, description="Verbose exporter logging.")
    format: Literal["onnx"] = spec_field("onnx", description="Export format.")
    is_quantized: bool = spec_field(False, description="The checkpoint comes from rtdetr quantize (Q/DQ graph).")
    raw_outputs: bool = spec_field(
        False, description="Export pred_logits and normalised pred_boxes instead of labels/boxes/scores."
    )
    simplify: bool = spec_field(False, description="Simplify the graph with onnxslim (verified the same way).")
    check_parity: bool = spec_field(True, description="Compare ONNX Runtime with PyTorch after export.")
    serialize_nvdsinfer: bool = spec_field(
        False, description="Write DeepStream nvinfer config files beside the ONNX file: not supported, must stay false."
    )

    @model_validator(mode="after")
    def _no_deepstream(self) -> ExportSpec:
        if self.serialize_nvdsinfer:
            raise ValueError(
                "export.serialize_nvdsinfer=true (DeepStream config files) is not supported; set it to false"
            )
        return self
