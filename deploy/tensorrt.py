"""TensorRT 10: building engines from exported ONNX files, with INT8 calibration (running an engine:
:mod:`rtdetr_tao.runtime.tensorrt`).

Needs the ``tensorrt`` and ``cuda-python`` packages (``pip install 'rtdetr-tao[trt]'``, or the deploy
container) and an NVIDIA GPU. Nothing here imports them until it is used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtdetr_tao.errors import DataError, ExportError
from rtdetr_tao.io import atomic_write_bytes
from rtdetr_tao.progress import stage
from rtdetr_tao.runtime.tensorrt import check_cuda, import_cudart, import_tensorrt

from .calibration import CalibrationBatches, CalibrationCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildSettings:
    """What gen_trt_engine asks of the builder."""

    data_type: str  # FP32 / FP16 / INT8
    workspace_mb: int
    min_batch: int
    opt_batch: int
    max_batch: int
    layers_precision: tuple[str, ...] = ()
    timing_cache: Path | None = None
    verbose: bool = False


def has_qdq_nodes(onnx_path: str | Path) -> bool:
    """True when the graph holds QuantizeLinear/DequantizeLinear nodes (explicit quantization)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    settings: BuildSettings,
    calibration: CalibrationBatches | None = None,
    cache: CalibrationCache | None = None,
) -> Path:
    """Build and (atomically) write a TensorRT engine from ``onnx_path``.

    A Q/DQ graph builds strongly typed (explicit quantization, no calibrator); INT8 without Q/DQ
    nodes calibrates on ``calibration`` (or reuses ``cache``).
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.VERBOSE if settings.verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit = has_qdq_nodes(onnx_path)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if explicit else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    if settings.workspace_mb > 0:  # MB → bytes without truncation (TAO lost values below 1024 MB)
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb * (1 << 20))
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if shape[0] == -1:
            rest = shape[1:]
            if any(d < 0 for d in rest):
                raise ExportError(f"{onnx_path}: input {tensor.name} has dynamic dims besides the batch: {shape}")
            profile.set_shape(
                tensor.name,
                (settings.min_batch, *rest),
                (settings.opt_batch, *rest),
                (settings.max_batch, *rest),
            )
    config.add_optimization_profile(profile)

    if not explicit:
        if settings.data_type in ("FP16", "INT8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if settings.data_type == "INT8":
            config.set_flag(trt.BuilderFlag.INT8)
            if calibration is None and (cache is None or cache.read() is None):
                raise DataError(
                    "an INT8 engine from a graph without Q/DQ nodes needs calibration images: set "
                    "gen_trt_engine.tensorrt.calibration.cal_image_dir (or an existing cal_cache_file), "
                    "or export a quantized model from `rtdetr quantize`"
                )
            config.int8_calibrator = make_calibrator(calibration, cache or CalibrationCache(None))
            config.set_calibration_profile(profile)
    elif settings.data_type != "INT8":
        log.info("the graph has Q/DQ nodes: building strongly typed (explicit quantization)")
    _apply_layer_precisions(trt, network, config, settings.layers_precision)

    timing = None
    if settings.timing_cache is not None:
        blob = settings.timing_cache.read_bytes() if settings.timing_cache.is_file() else b""
        timing = config.create_timing_cache(blob)
        config.set_timing_cache(timing, ignore_mismatch=False)

    log.info("building TensorRT engine (%s, batch %d/%d/%d) from %s", settings.data_type, settings.min_batch,
             settings.opt_batch, settings.max_batch, onnx_path)  # fmt: skip
    with stage("TensorRT engine build"):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT failed to build an engine from {onnx_path}; rerun with gen_trt_engine.verbose=true"
        )
    atomic_write_bytes(engine_path, bytes(serialized))
    if timing is not None and settings.timing_cache is not None:
        atomic_write_bytes(settings.timing_cache, bytes(timing.serialize()))
    return Path(engine_path)


def _apply_layer_precisions(trt: Any, network: Any, config: Any, entries: Sequence[str]) -> None:
    if not entries:
        return
    wanted = {}
    for entry in entries:
        name, _, precision = entry.rpartition(":")
        wanted[name] = {"fp32": trt.float32, "fp16": trt.float16, "int8": trt.int8}[precision.lower()]
    found = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in wanted:
            layer.precision = wanted[layer.name]
            found.add(layer.name)
    missing = sorted(set(wanted) - found)
    if missing:
        raise DataError(f"gen_trt_engine.tensorrt.layers_precision names layers the network lacks: {missing}")
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)


def make_calibrator(batches: CalibrationBatches | None, cache: CalibrationCache) -> Any:
    """A TensorRT entropy calibrator fed by ``batches`` (copied to one device buffer) with ``cache``."""
    trt, cudart = import_tensorrt(), import_cudart()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.iterator = iter(batches) if batches is not None else iter(())
            self.batch_size = batches.batch_size if batches is not None else 1
            self.buffer = None

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self.iterator, None)
            if batch is None:
                return None
            if self.buffer is None:
                self.buffer = check_cuda(cudart.cudaMalloc(batch.nbytes))
            check_cuda(cudart.cudaMemcpy(self.buffer, batch.ctypes.data, batch.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))  # fmt: skip
            return [int(self.buffer)]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read()

        def write_calibration_cache(self, data: Any) -> None:
            cache.write(bytes(data))

    return EntropyCalibrator()
