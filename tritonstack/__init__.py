"""tritonstack: from a PyTorch checkpoint to measured serving on NVIDIA Triton."""

__version__ = "0.1.0"
