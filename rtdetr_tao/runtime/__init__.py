"""Exported models without PyTorch: the runtime behind ``rtdetr-deploy``, ``rtdetr inference`` on an ``.onnx``
and ``Predictor.from_onnx``.

- :mod:`~rtdetr_tao.runtime.backends`: one interface (:class:`~rtdetr_tao.runtime.backends.Backend`) over ONNX
  Runtime and TensorRT; :func:`~rtdetr_tao.runtime.backends.open_backend` picks one by file suffix.
- :mod:`~rtdetr_tao.runtime.tensorrt`: a serialized TensorRT engine on the GPU.
- :mod:`~rtdetr_tao.runtime.detect`: images in, detections in original pixels out (the preprocessing and the
  post-processing of ``rtdetr``).

onnxruntime, tensorrt and cuda-python are imported where they are used, with an install hint. Import the
submodules directly; this package imports nothing itself.
"""
