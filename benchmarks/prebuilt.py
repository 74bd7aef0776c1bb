"""The requests a cell sends, built once before it starts, as perf_analyzer builds its own.

Each is a serialized `ModelInferRequest` whose tensors are framed once from the pool's arrays
(client/_wire.py), so a send costs no protobuf work. With shared memory (`system`, or `cuda` on a
GPU machine) each batch of the pool is written once into a region of its own, registered with the
server, with room after the inputs for the outputs, and the request carries only its header: the
tensors never travel over gRPC, as with perf_analyzer's `--shared-memory`. Concurrent sends of one
batch share its output room, which nobody reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tritonstack.benchmarks.config import SharedMemory
from tritonstack.client._base import InferRequest, prepare_in_shared_memory
from tritonstack.client._shm import ShmPool, shm_pool
from tritonstack.client._wire import encode_request, infer_request
from tritonstack.spec import Array, ModelSpec


@dataclass
class Prebuilt:
    """A cell's requests (serialized) for one model version and the shared memory regions they
    point into, if any."""

    model: str
    version: str
    payloads: list[bytes]
    regions: ShmPool | None = None
    output_offsets: list[dict[str, int]] | None = None  # per request, where each output lands

    async def register(self, client: Any, timeout_s: float | None = None) -> None:
        """Register the regions with the server behind `client` (tritonclient's asyncio client)."""
        for region in self.regions.regions if self.regions is not None else []:
            method, args = region.registration()
            await getattr(client, method)(*args, client_timeout=timeout_s)
            region.registered = True

    async def unregister(self, client: Any, timeout_s: float | None = None) -> None:
        """Unregister the regions from the server (they stay, to be registered again)."""
        for region in self.regions.regions if self.regions is not None else []:
            if region.registered:
                method, args = region.unregistration()
                await getattr(client, method)(*args, client_timeout=timeout_s)
                region.registered = False

    def destroy(self) -> None:
        """Free the regions (unregister them first)."""
        if self.regions is not None:
            self.regions.destroy()


def prebuilt(
    model: str,
    version: str,
    spec: ModelSpec,
    batches: Iterable[Mapping[str, Array]],
    shared_memory: SharedMemory = "none",
    cuda_device: int = 0,
) -> Prebuilt:
    """The requests for `batches` (valid inputs of `spec`), tensors in the message or in regions."""
    if shared_memory == "none":
        payloads = []
        for feeds in batches:
            header = infer_request(model, version, spec, feeds, None)
            payloads.append(encode_request(header, [feeds[t.name] for t in spec.inputs]))
        return Prebuilt(model, version, payloads)
    regions = shm_pool(shared_memory, cuda_device)
    assert regions is not None  # a kind was given
    prepared = [
        prepare_in_shared_memory(regions, spec, InferRequest(model, feeds), version) for feeds in batches
    ]
    requests = [p.request for p in prepared]
    return Prebuilt(model, version, requests, regions, [p.output_offsets for p in prepared])
