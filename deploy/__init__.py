"""rtdetr-deploy: TensorRT / ONNX Runtime deployment of exported RT-DETRv2 models, without PyTorch."""
