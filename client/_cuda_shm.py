"""CUDA shared memory regions (`use_shared_memory="cuda"`): GPU memory that the client allocates
and Triton opens through a CUDA IPC handle, so a GPU instance reads its inputs without a
host-to-device copy of its own (a CPU instance works too: Triton copies).

Importing this module fails without NVIDIA's cuda-bindings package; `client._shm.shm_pool`
turns that into a one-line `ClientError`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import cuda.bindings.runtime as cudart  # before tritonclient's module: its absence is the message
import numpy as np
import tritonclient.utils.cuda_shared_memory as cudashm

from tritonstack.client._region import CUDA_HINT, Region, ServerCall
from tritonstack.errors import ClientError, InvalidArgument
from tritonstack.spec import Array


class CudaRegion(Region):
    """`byte_size` bytes of device memory on GPU `device`."""

    def __init__(self, name: str, byte_size: int, device: int) -> None:
        super().__init__(name, byte_size)
        self.device = device
        self._handle = cudashm.create_shared_memory_region(name, byte_size, device)
        self._raw_handle = cudashm.get_raw_handle(self._handle)

    def write(self, values: Sequence[Array], offsets: Sequence[int]) -> None:
        """One host-to-device copy per value. tritonclient writes its arrays back to back from the
        region's start, with no offset: filler bytes go where alignment leaves a gap."""
        chunks: list[Array] = []
        end = 0
        for value, offset in zip(values, offsets, strict=True):
            if offset > end:
                chunks.append(np.zeros(offset - end, np.uint8))
            chunks.append(value)
            end = offset + value.nbytes
        cudashm.set_shared_memory_region(self._handle, chunks)

    def contents(self) -> Array:
        """A host copy of the whole region: tritonclient reads from its start, with no offset."""
        copy: Array = cudashm.get_contents_as_numpy(self._handle, np.uint8, [self.byte_size])
        return copy

    def registration(self) -> ServerCall:
        return "register_cuda_shared_memory", (self.name, self._raw_handle, self.device, self.byte_size)

    def unregistration(self) -> ServerCall:
        return "unregister_cuda_shared_memory", (self.name,)

    def destroy(self) -> None:
        cudashm.destroy_shared_memory_region(self._handle)  # drops tritonclient's reference
        del self._handle  # the device memory is freed with the last one


def cuda_regions(device: int) -> Callable[[str, int], CudaRegion]:
    """`CudaRegion`'s constructor for GPU `device`, once that device is known to be visible."""
    error, count = cudart.cudaGetDeviceCount()
    if error != cudart.cudaError_t.cudaSuccess:
        raise ClientError(
            f"CUDA shared memory needs an NVIDIA GPU; CUDA finds none ({error.name}): {CUDA_HINT}"
        )
    if not 0 <= device < count:
        raise InvalidArgument(f"cuda_device {device} is not among the {count} CUDA device(s) visible here")
    return functools.partial(CudaRegion, device=device)
