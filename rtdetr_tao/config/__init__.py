"""Experiment specs: Pydantic models (the one source of truth), loading and schema generation."""

from .automl import AutoMLSpec
from .dataset import AugmentationSpec, CalibrationSource, DatasetSpec, DataSource, InferSource
from .deploy import CalibrationSpec, GenTrtEngineSpec, TensorRTSpec
from .distill import BindingSpec, DistillSpec
from .experiment import ClearMLSpec, ExperimentSpec, WandBSpec
from .loader import LoadedSpec, load_spec
from .model import PRESETS, ModelSpec
from .quantize import LayerQuantSpec, QuantizeSpec, TensorQuantSpec
from .tasks import EvaluateSpec, ExportSpec, InferenceSpec
from .train import SCALE_ADAPTIVE_LR_BACKBONE, CudnnSpec, EMASpec, OptimSpec, TrainSpec

__all__ = [
    "ACTIONS",
    "PRESETS",
    "SCALE_ADAPTIVE_LR_BACKBONE",
    "AugmentationSpec",
    "AutoMLSpec",
    "BindingSpec",
    "CalibrationSource",
    "CalibrationSpec",
    "ClearMLSpec",
    "CudnnSpec",
    "DataSource",
    "DatasetSpec",
    "DistillSpec",
    "EMASpec",
    "EvaluateSpec",
    "ExperimentSpec",
    "ExportSpec",
    "GenTrtEngineSpec",
    "InferSource",
    "InferenceSpec",
    "LayerQuantSpec",
    "LoadedSpec",
    "ModelSpec",
    "OptimSpec",
    "QuantizeSpec",
    "TensorQuantSpec",
    "TensorRTSpec",
    "TrainSpec",
    "WandBSpec",
    "load_spec",
]
