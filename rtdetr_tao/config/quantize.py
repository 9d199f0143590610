"""``quantize``: post-training quantization with NVIDIA ModelOpt or torchao (TAO's ``ModelQuantizationConfig``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from .fields import Section, spec_field

QuantDtype = Literal["int8", "fp8_e4m3fn", "fp8_e5m2", "native"]
DTYPE_ALIASES = {"float8_e4m3fn": "fp8_e4m3fn", "float8_e5m2": "fp8_e5m2", "float": "native", "fp32": "native"}
DTYPE_ENUM = ["int8", "fp8_e4m3fn", "fp8_e5m2", "native", *DTYPE_ALIASES]


def _normalise_dtype(value: Any) -> Any:
    return DTYPE_ALIASES.get(value, value) if isinstance(value, str) else value


class TensorQuantSpec(Section):
    """How one kind of tensor (weights or activations) is quantized."""

    dtype: QuantDtype = spec_field(
        ...,
        description="int8, fp8_e4m3fn, fp8_e5m2 (static PTQ uses e4m3) or native (keep float).",
        schema_extra={"enum": DTYPE_ENUM},
    )
    quant_axis: int | None = spec_field(
        None, description="Per-channel axis; null: per-tensor for activations, per-output-channel for int8 weights."
    )

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype_alias(cls, value: Any) -> Any:
        return _normalise_dtype(value)


class LayerQuantSpec(Section):
    """A rule: modules whose qualified name (or class name) matches ``module_name`` get these dtypes."""

    module_name: str = spec_field(..., min_length=1, description="fnmatch pattern: '*', '*encoder*', 'Conv2d', ...")
    weights: TensorQuantSpec | None = spec_field(None, description="Weight quantization; null: unchanged.")
    activations: TensorQuantSpec | None = spec_field(
        None, description="Input-activation quantization; null: unchanged."
    )


class QuantizeSpec(Section):
    """``rtdetr quantize``."""

    backend: Literal["modelopt", "torchao"] = spec_field(
        "modelopt",
        description=(
            "Quantization library: modelopt (NVIDIA ModelOpt, PyTorch front end: calibrated int8/FP8 of Conv2d and "
            "Linear, Q/DQ ONNX export) or torchao (TAO's default; int8 Linear weights, activations native "
            "(weight-only) or dynamic int8, no calibration, runs on the CPU, no ONNX export)."
        ),
        schema_extra={"enum": ["modelopt", "modelopt.pytorch", "torchao"]},
    )
    mode: Literal["static_ptq", "weight_only_ptq"] = spec_field(
        "static_ptq", description="static_ptq: weights and activations; weight_only_ptq: weights only."
    )
    algorithm: Literal["max", "entropy", "percentile", "mse"] = spec_field(
        "max",
        description="Activation calibration: max (minmax), entropy, percentile or mse histograms.",
        schema_extra={"enum": ["max", "minmax", "entropy", "percentile", "mse"]},
    )
    percentile: float = spec_field(99.99, gt=0.0, le=100.0, description="Percentile for algorithm=percentile.")
    layers: list[LayerQuantSpec] = spec_field([], description="Per-module rules, later rules win.", automl=False)
    skip_names: list[str] = spec_field(
        [], description="fnmatch patterns (qualified or class names) left in float.", automl=False
    )
    default_layer_dtype: QuantDtype = spec_field(
        "native", description="Weight dtype of modules no rule matches.", schema_extra={"enum": DTYPE_ENUM}
    )
    default_activation_dtype: QuantDtype = spec_field(
        "native", description="Activation dtype of modules no rule matches.", schema_extra={"enum": DTYPE_ENUM}
    )
    model_path: str | None = spec_field(
        None, path="file", description="Checkpoint to quantize (a path or a weights-catalog name).", automl=False
    )
    results_dir: str | None = spec_field(
        None, path="output", description="Output folder; null: results_dir/quantize.", automl=False
    )
    calibration_batches: int = spec_field(
        16, ge=1, description="Calibration batches from quant_calibration_data_sources."
    )
    device: str = spec_field(
        "auto", pattern=r"^(auto|cuda|cpu|cuda:[0-9]+)$", description="Calibration device; auto: CUDA if available."
    )
    backend_kwargs: dict[str, Any] = spec_field(
        {}, description="Extra keyword arguments for mtq.quantize.", automl=False
    )

    @model_validator(mode="after")
    def _torchao_dtypes(self) -> QuantizeSpec:
        if self.backend != "torchao":
            return self
        chosen = [
            ("default_layer_dtype", self.default_layer_dtype),
            ("default_activation_dtype", self.default_activation_dtype),
        ]
        for index, rule in enumerate(self.layers):
            for kind in ("weights", "activations"):
                tensor = getattr(rule, kind)
                if tensor is not None:
                    chosen.append((f"layers[{index}].{kind}.dtype", tensor.dtype))
        fp8 = [f"{key}={dtype}" for key, dtype in chosen if dtype.startswith("fp8")]
        if fp8:
            raise ValueError(
                f"quantize.backend=torchao quantizes to int8 only, not {', '.join(fp8)}; use int8 or "
                "quantize.backend=modelopt"
            )
        return self

    @field_validator("backend", mode="before")
    @classmethod
    def _backend_alias(cls, value: Any) -> Any:
        return "modelopt" if value == "modelopt.pytorch" else value

    @field_validator("algorithm", mode="before")
    @classmethod
    def _algorithm_alias(cls, value: Any) -> Any:
        return "max" if value == "minmax" else value

    @field_validator("default_layer_dtype", "default_activation_dtype", mode="before")
    @classmethod
    def _dtype_alias(cls, value: Any) -> Any:
        return _normalise_dtype(value)
