"""Issue 17, D1: clients follow a promotion. Two versions exported, v1 promoted to production,
Triton polling the repository, unversioned requests in a loop from the sync and the asyncio client, then v2
promoted: Triton unloads v1, and each client, finding the production version it cached gone,
reads the model's config again and retries. No request may fail."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import POLL_ARGS, ServerFactory
from tritonstack import recsys
from tritonstack.cli import main
from tritonstack.client import AsyncTritonClient, TritonClient
from tritonstack.export.checkpoint import LoadedModel, load_model
from tritonstack.export.pipeline import export_to_repository
from tritonstack.formats import Format
from tritonstack.recsys.train import train
from tritonstack.spec import Array

pytestmark = pytest.mark.server
MODEL = "dlrm_onnx"


class Traffic:
    """One client's unversioned requests until `stop`: the version that answered each (told
    apart by its outputs), and every failure."""

    def __init__(self, url: str, inputs: dict[str, Array], want: dict[int, Array]) -> None:
        self.url = url
        self.inputs = inputs
        self.want = want
        self.versions: list[int] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def record(self, outputs: dict[str, Array]) -> None:
        (got,) = outputs.values()
        match = [v for v, want in self.want.items() if np.allclose(got, want, rtol=1e-4, atol=1e-5)]
        self.versions.append(match[0] if len(match) == 1 else -1)

    def sync(self) -> None:
        with TritonClient(self.url) as triton:
            while not self.stop.is_set():
                try:
                    outputs = triton.infer(MODEL, self.inputs)
                except Exception as exc:  # every failure counts, whatever its type
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                else:
                    self.record(outputs)

    def aio(self) -> None:
        async def loop() -> None:
            async with AsyncTritonClient(self.url) as aio:
                while not self.stop.is_set():
                    try:
                        outputs = await aio.infer(MODEL, self.inputs)
                    except Exception as exc:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    else:
                        self.record(outputs)

        asyncio.run(loop())


def _export_two_versions(root: Path) -> list[LoadedModel]:
    """v1 and v2 of dlrm_onnx, from differently seeded checkpoints so that their outputs differ."""
    config = recsys.get_architecture("dlrm").preset("tiny")
    loaded = []
    for seed in (0, 1):
        checkpoint = root / f"dlrm-{seed}.pt"
        train("dlrm", config, steps=3, batch_size=32, lr=1e-3, seed=seed, checkpoint_path=checkpoint)
        loaded.append(load_model(checkpoint, max_batch_size=4))
        export_to_repository(loaded[-1], [Format.ONNX], root / "repo")
    return loaded


def _outputs(model: LoadedModel, inputs: dict[str, Array]) -> Array:
    with torch.no_grad():
        out: Array = model.module(*(torch.from_numpy(inputs[n]) for n in model.spec.input_names)).numpy()
    return out


def test_clients_follow_a_promotion_without_failing(
    tmp_path: Path, triton_server_factory: ServerFactory
) -> None:
    models = _export_two_versions(tmp_path)
    repo = tmp_path / "repo"
    assert main(["models", "promote", MODEL, "1", "--status", "production", "--repo", str(repo)]) == 0
    server = triton_server_factory(repo, model_control_mode="poll", extra_args=POLL_ARGS)
    inputs = models[0].spec.random_inputs(4)
    want = {1: _outputs(models[0], inputs), 2: _outputs(models[1], inputs)}
    assert not np.allclose(want[1], want[2])
    clients = [Traffic(server.grpc_url, inputs, want) for _ in range(2)]
    threads = [threading.Thread(target=clients[0].sync), threading.Thread(target=clients[1].aio)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while not all(c.versions for c in clients) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert main(["models", "promote", MODEL, "2", "--status", "production", "--repo", str(repo)]) == 0
        promoted = [len(c.versions) for c in clients]
        deadline = time.monotonic() + 30  # Triton polls every second, then loads v2 and unloads v1
        while time.monotonic() < deadline and not all(c.versions[-20:] == [2] * 20 for c in clients):
            time.sleep(0.2)
    finally:
        for c in clients:
            c.stop.set()
        for thread in threads:
            thread.join()
    for kind, client, before in zip(("sync", "asyncio"), clients, promoted, strict=True):
        assert not client.errors, f"{kind}: {len(client.errors)} failed, first: {client.errors[0]}"
        assert set(client.versions[:before]) == {1}, kind  # production v1 before the promotion
        assert client.versions[-20:] == [2] * 20, f"{kind} never reached v2 (last {client.versions[-5:]})"
        assert 1 not in client.versions[client.versions.index(2) :], f"{kind} went back to v1"
        print(
            f"\n{kind}: {len(client.versions)} requests, {len(client.versions) - before} after the promotion"
        )
    server.stop()
