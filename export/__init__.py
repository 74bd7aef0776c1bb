"""Checkpoints to verified ONNX, TorchScript and TensorRT artifacts in a Triton model repository.

Most modules need the 'export' extra (torch, ONNX, ONNX Runtime) and import `_extra` first, so
without it they raise one error naming the extra. The option modules (`flags`, `formats`,
`deployment`) and `repository` need only the base install: the CLI builds its parser from them.
"""
