"""System shared memory for request and response tensors (`use_shared_memory=True`).

Tensors then travel through a POSIX shared memory object instead of the gRPC message: the
client writes inputs into a region, Triton reads them and writes outputs back there. A region
is registered with the server once and reused; each request holds one region to itself (an
asyncio client or threads may have several requests in flight), and the pool grows when a
request needs more room than any free region has. Only for a server on the same host.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.utils.shared_memory as shm

from tritonstack.spec import Array

_MIN_BYTES = 1 << 16
_ALIGN = 64  # each tensor starts on a cache line
_ids = itertools.count()


def aligned(nbytes: int) -> int:
    return -(-nbytes // _ALIGN) * _ALIGN


@dataclass
class Region:
    """One shared memory object; `registered` once the server knows it by `name`."""

    name: str
    byte_size: int
    handle: Any = field(repr=False)
    registered: bool = False

    @property
    def key(self) -> str:
        return "/" + self.name

    def write(self, values: Sequence[Array], offsets: Sequence[int]) -> None:
        for value, offset in zip(values, offsets, strict=True):
            shm.set_shared_memory_region(self.handle, [np.ascontiguousarray(value)], offset=offset)

    def read(self, dtype: np.dtype[Any], shape: Sequence[int], offset: int) -> Array:
        """A copy: the region is reused as soon as the request is done."""
        view = shm.get_contents_as_numpy(self.handle, dtype, list(shape), offset=offset)
        copy: Array = view.copy()
        del view  # a live view would keep the mapping from being closed
        return copy


class ShmPool:
    """The client's regions; thread-safe, as the sync client's `infer_many` uses threads."""

    def __init__(self) -> None:
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
            name = f"tritonstack-{os.getpid()}-{next(_ids)}"
            region = Region(
                name, size, shm.create_shared_memory_region(name, "/" + name, size, create_only=True)
            )
            self.regions.append(region)
            return region

    def release(self, region: Region) -> None:
        with self._lock:
            self._free.append(region)

    def destroy(self) -> None:
        """Unlink every region (after the server unregistered them)."""
        with self._lock:
            for region in self.regions:
                shm.destroy_shared_memory_region(region.handle)
            self.regions, self._free = [], []
