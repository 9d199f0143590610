"""``gen_trt_engine``: TensorRT engine build settings (TAO Deploy's ``RTGenTrtEngineExpConfig``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from .fields import Section, spec_field


class CalibrationSpec(Section):
    """INT8 entropy calibration for ONNX graphs without Q/DQ nodes."""

    cal_image_dir: list[str] = spec_field(
        [], path="images", description="Calibration images: folders, archives or s3:// URIs.", automl=False
    )
    cal_cache_file: str | None = spec_field(
        None,
        path="cache",
        description="Calibration cache; reused when present, written after calibration.",
        automl=False,
    )
    cal_batch_size: int = spec_field(1, ge=1, description="Calibration batch size.", popular=True)
    cal_batches: int = spec_field(1, ge=1, description="Calibration batches.", popular=True)

    @field_validator("cal_image_dir", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class TensorRTSpec(Section):
    """Builder settings."""

    data_type: Literal["FP32", "FP16", "INT8"] = spec_field(
        "FP32",
        description="Engine precision (case-insensitive).",
        schema_extra={"enum": ["FP32", "FP16", "INT8", "fp32", "fp16", "int8"]},
    )
    workspace_size: int = spec_field(1024, ge=0, description="Builder workspace in MB (0: TensorRT's default).")
    min_batch_size: int = spec_field(1, ge=1, description="Optimisation profile: smallest batch.", popular=True)
    opt_batch_size: int = spec_field(1, ge=1, description="Optimisation profile: batch to tune for.", popular=True)
    max_batch_size: int = spec_field(4, ge=1, description="Optimisation profile: largest batch.")
    layers_precision: list[str] = spec_field(
        [], description="Per-layer precision, 'layer_name:fp32' entries.", automl=False
    )
    calibration: CalibrationSpec = spec_field(CalibrationSpec(), description="INT8 calibration.", automl=False)

    @field_validator("data_type", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("layers_precision")
    @classmethod
    def _layer_precision_format(cls, value: list[str]) -> list[str]:
        for entry in value:
            name, _, precision = entry.rpartition(":")
            if not name or precision.lower() not in {"fp32", "fp16", "int8"}:
                raise ValueError(f"'{entry}': write 'layer_name:fp32' (or fp16 / int8)")
        return value

    @model_validator(mode="after")
    def _profile_order(self) -> TensorRTSpec:
        if not self.min_batch_size <= self.opt_batch_size <= self.max_batch_size:
            raise ValueError(
                f"gen_trt_engine.tensorrt batch sizes must satisfy min <= opt <= max, got "
                f"{self.min_batch_size} / {self.opt_batch_size} / {self.max_batch_size}"
            )
        return self


class GenTrtEngineSpec(Section):
    """``rtdetr-deploy gen_trt_engine``."""

    results_dir: str | None = spec_field(
        None, path="output", description="Output folder; null: results_dir/gen_trt_engine.", automl=False
    )
    gpu_id: int = spec_field(0, ge=0, description="GPU that builds the engine.", popular=True)
    onnx_file: str | None = spec_field(None, path="model", description="ONNX model from rtdetr export.", automl=False)
    trt_engine: str | None = spec_field(None, path="output", description="Where to write the engine.", automl=False)
    timing_cache: str | None = spec_field(
        None, path="cache", description="TensorRT timing cache, read and updated.", automl=False
    )
    batch_size: int = spec_field(-1, ge=-1, description="Fixed batch size; -1: use the tensorrt profile.", popular=True)
    verbose: bool = spec_field(False, description="Verbose TensorRT build log.")
    input_channel: Literal[3] = spec_field(3, description="Input channels (RGB).")
    input_width: int | None = spec_field(None, ge=32, description="Input width; null: taken from the ONNX file.")
    input_height: int | None = spec_field(None, ge=32, description="Input height; null: taken from the ONNX file.")
    tensorrt: TensorRTSpec = spec_field(TensorRTSpec(), description="Builder settings.", automl=False)
