"""Running a serialized TensorRT engine (``rtdetr-deploy gen_trt_engine`` builds them), and the imports of
``tensorrt`` and ``cuda-python`` (``pip install 'rtdetr-tao[trt]'``, or the deploy container) that the engine
builder in ``rtdetr_deploy`` shares. Needs an NVIDIA GPU; nothing here imports them until it is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, DependencyError, ExportError, require
from ..metadata import read_metadata


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a DependencyError with the install hint."""
    return require("tensorrt", extra="trt", purpose="Building or running a TensorRT engine")


def import_cudart() -> Any:
    """cuda-python's CUDA runtime bindings, or a DependencyError with the install hint."""
    return require(
        "cuda.bindings.runtime", extra="trt", purpose="Running a TensorRT engine (CUDA runtime)", package="cuda-python"
    )


def check_cuda(result: tuple[Any, ...] | Any) -> Any:
    """Unwrap a cuda-python ``(error, value...)`` result, raising on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise DependencyError(f"CUDA runtime error {err}: is an NVIDIA GPU with a working driver present?")
    return values[0] if len(values) == 1 else tuple(values)


class TensorRTBackend:
    """A serialized engine on the GPU. Device buffers are allocated once, at the profile's maximum
    batch; each run sets the real batch shape and copies back only its rows."""

    def __init__(self, path: str | Path):
        trt, self.cudart = import_tensorrt(), import_cudart()
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"TensorRT engine not found: {self.path}")
        self.metadata = read_metadata(self.path)
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise DataError(f"cannot load TensorRT engine {self.path}: built by another TensorRT version or GPU?")
        self.context = self.engine.create_execution_context()
        self.stream = check_cuda(self.cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        min_shape, _, max_shape = self.engine.get_tensor_profile_shape(self.inputs[0], 0)
        self.min_batch, self.max_batch = int(min_shape[0]), int(max_shape[0])
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.buffers: dict[str, int] = {}
        for name in self.inputs:
            self.context.set_input_shape(name, self._max_shape(name))
        for name in names:
            shape = self._max_shape(name) if name in self.inputs else tuple(self.context.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * self.dtypes[name].itemsize
            self.buffers[name] = int(check_cuda(self.cudart.cudaMalloc(nbytes)))
            self.context.set_tensor_address(name, self.buffers[name])

    def _max_shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.engine.get_tensor_profile_shape(name, 0)[2])

    def run(self, images: np.ndarray, orig_sizes: np.ndarray) -> dict[str, np.ndarray]:
        cudart = self.cudart
        batch = len(images)
        feeds = {"images": images, "orig_target_sizes": orig_sizes}
        for name in self.inputs:
            array = np.ascontiguousarray(feeds[name].astype(self.dtypes[name], copy=False))
            self.context.set_input_shape(name, array.shape)
            check_cuda(cudart.cudaMemcpyAsync(self.buffers[name], array.ctypes.data, array.nbytes,
                                              cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))  # fmt: skip
        if not self.context.execute_async_v3(self.stream):
            raise ExportError(f"TensorRT execution failed for a batch of {batch} on {self.path}")
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = np.empty(shape, dtype=self.dtypes[name])
            check_cuda(cudart.cudaMemcpyAsync(out.ctypes.data, self.buffers[name], out.nbytes,
                                              cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))  # fmt: skip
            results[name] = out
        check_cuda(cudart.cudaStreamSynchronize(self.stream))
        return results

    def __del__(self) -> None:
        cudart = getattr(self, "cudart", None)
        for pointer in getattr(self, "buffers", {}).values():
            cudart.cudaFree(pointer)
