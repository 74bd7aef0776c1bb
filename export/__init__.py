"""Checkpoints to verified ONNX, TorchScript and TensorRT artifacts in a Triton model repository
(needs the 'export' extra)."""

from tritonstack.extras import require

require(__name__, "export")
