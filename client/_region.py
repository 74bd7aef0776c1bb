"""A shared memory region as the client's pool sees it, whatever its kind: `SystemRegion`
(`client/_shm.py`) or `CudaRegion` (`client/_cuda_shm.py`, which only the pool imports, when asked
for CUDA) both build on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from tritonstack.spec import Array

# The name of a tritonclient method (the sync and asyncio clients name them alike) and its arguments.
ServerCall = tuple[str, tuple[Any, ...]]

CUDA_HINT = (
    "pip install 'tritonstack[cuda]' (NVIDIA's cuda-bindings; 'cuda-bindings==12.*' under a CUDA 12 "
    "driver) on a machine with an NVIDIA GPU, or use system shared memory (use_shared_memory=True, "
    "infer --shm)"
)


class Region(ABC):
    """One region of `byte_size` bytes; `registered` once the server knows it by `name`."""

    def __init__(self, name: str, byte_size: int) -> None:
        self.name = name
        self.byte_size = byte_size
        self.registered = False

    @abstractmethod
    def write(self, values: Sequence[Array], offsets: Sequence[int]) -> None:
        """Copy each (C-contiguous) value to its offset."""

    @abstractmethod
    def contents(self) -> Array:
        """The region's bytes as uint8, valid until the region is reused: slice outputs, then copy."""

    @abstractmethod
    def registration(self) -> ServerCall:
        """The call that registers the region with the server."""

    @abstractmethod
    def unregistration(self) -> ServerCall:
        """The call that unregisters it."""

    @abstractmethod
    def destroy(self) -> None:
        """Free the memory (after the server unregistered the region)."""
