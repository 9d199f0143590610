"""Tensor operations shared by the model, the loss and the exporters."""
