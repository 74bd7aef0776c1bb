"""Shared memory for request and response tensors (`use_shared_memory=True` or `"cuda"`).

Tensors then travel through a shared region instead of the gRPC message: the client writes
inputs into a region, Triton reads them and writes outputs back there. A region is registered
with the server once and reused; each request holds one region to itself (an asyncio client or
threads may have several requests in flight), and the pool grows when a request needs more room
than any free region has. Only for a server on the same host.

The pool is the same for every kind of region (`client/_region.py`); a kind only says how its
memory is made, written, read, registered and freed: `SystemRegion` (a POSIX shared memory object)
here, `CudaRegion` (GPU memory shared through a CUDA IPC handle) in `client/_cuda_shm.py`, imported
only when asked for: it needs NVIDIA's cuda-bindings package.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import tritonclient.utils.shared_memory as shm

from tritonstack.client._region import CUDA_HINT, Region, ServerCall
from tritonstack.errors import ClientError, InvalidArgument, first_line
from tritonstack.spec import Array

ShmKind = Literal["system", "cuda"]

_MIN_BYTES = 1 << 16
_ALIGN = 64  # each tensor starts on a cache line
_ids = itertools.count()


def aligned(nbytes: int) -> int:
    return -(-nbytes // _ALIGN) * _ALIGN


class SystemRegion(Region):
    """A POSIX shared memory object, `/dev/shm/<name>`."""

    def __init__(self, name: str, byte_size: int) -> None:
        super().__init__(name, byte_size)
        self._handle = shm.create_shared_memory_region(name, "/" + name, byte_size, create_only=True)

    def write(self, values: Sequence[Array], offsets: Sequence[int]) -> None:
        for value, offset in zip(values, offsets, strict=True):
            shm.set_shared_memory_region(self._handle, [value], offset=offset)

    def contents(self) -> Array:
        """A view of the mapping, no copy; a live view keeps the mapping from being closed."""
        view: Array = shm.get_contents_as_numpy(self._handle, np.uint8, [self.byte_size])
        return view

    def registration(self) -> ServerCall:
        return "register_system_shared_memory", (self.name, "/" + self.name, self.byte_size)

    def unregistration(self) -> ServerCall:
        return "unregister_system_shared_memory", (self.name,)

    def destroy(self) -> None:
        shm.destroy_shared_memory_region(self._handle)


class ShmPool:
    """The client's regions, made by `create(name, byte_size)`; thread-safe, as the sync client's
    `infer_many` uses threads."""

    def __init__(self, create: Callable[[str, int], Region]) -> None:
        self._create = create
        self._free: list[Region] = []
        self.regions: list[Region] = []
        self._lock = threading.Lock()

    def acquire(self, nbytes: int) -> Region:
        """A free region of at least `nbytes` (the smallest that fits), or a new, unregistered one."""
        with self._lock:
            fits = [r for r in self._free if r.byte_size >= nbytes]
            if fits:
                region = min(fits, key=lambda r: r.byte_size)
                self._free.remove(region)
                return region
            size = max(_MIN_BYTES, 1 << (max(nbytes, 1) - 1).bit_length())  # powers of two: few sizes
            region = self._create(f"tritonstack-{os.getpid()}-{next(_ids)}", size)
            self.regions.append(region)
            return region

    def release(self, region: Region) -> None:
        with self._lock:
            self._free.append(region)

    def destroy(self) -> None:
        """Free every region (after the server unregistered them)."""
        with self._lock:
            for region in self.regions:
                region.destroy()
            self.regions, self._free = [], []


def shm_pool(kind: bool | ShmKind, cuda_device: int = 0) -> ShmPool | None:
    """The pool for `use_shared_memory` (True means "system"), None without shared memory.

    CUDA's dependencies and device are checked here, when the client is made, so that a machine
    without them fails with one line naming the fix rather than at the first request.
    """
    if kind != "cuda" and cuda_device != 0:
        raise InvalidArgument(f"cuda_device={cuda_device} needs use_shared_memory='cuda' (infer --cuda-shm)")
    if kind is False:
        return None
    if kind is True or kind == "system":
        return ShmPool(SystemRegion)
    if kind != "cuda":
        raise InvalidArgument(
            f"use_shared_memory={kind!r}: pass True (or 'system') for system shared memory, or 'cuda'"
        )
    try:
        from tritonstack.client._cuda_shm import cuda_regions
    except (ImportError, RuntimeError) as exc:  # tritonclient raises RuntimeError without cuda-bindings
        raise ClientError(f"CUDA shared memory needs cuda-bindings ({first_line(exc)}): {CUDA_HINT}") from exc
    return ShmPool(cuda_regions(cuda_device))
