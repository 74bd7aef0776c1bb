"""Serving with Triton: the embedded `tritonserver` from the nvidia-pytriton wheel, or an external one."""

from tritonstack.serve.binary import TritonInstall, find_triton
from tritonstack.serve.server import ExternalServer, TritonServer, free_port, running_server

__all__ = ["ExternalServer", "TritonInstall", "TritonServer", "find_triton", "free_port", "running_server"]
