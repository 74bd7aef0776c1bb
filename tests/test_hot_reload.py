"""Hot reload under Triton's own polling (every second): a version exported
while requests flow is picked up with zero failed requests, and hidden staging directories are
never seen by Triton (nothing is staged at the repository's top level, which Triton polls even
for hidden names)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from tests.conftest import POLL_ARGS, ServerFactory
from tritonstack import recsys
from tritonstack.export.checkpoint import LoadedModel, load_model
from tritonstack.export.pipeline import export_to_repository
from tritonstack.formats import Format
from tritonstack.recsys.train import train
from tritonstack.spec import Array, wire_dtype

pytestmark = pytest.mark.server
MODEL = "dlrm_onnx"


def _model(root: Path, seed: int) -> LoadedModel:
    checkpoint = root / f"dlrm-{seed}.pt"
    config = recsys.get_architecture("dlrm").preset("tiny")
    train("dlrm", config, steps=3, batch_size=32, lr=1e-3, seed=seed, checkpoint_path=checkpoint)
    return load_model(checkpoint, max_batch_size=4)


def _inputs(feeds: dict[str, Array], loaded: LoadedModel) -> list[grpcclient.InferInput]:
    inputs = []
    for tensor in loaded.spec.inputs:
        inputs.append(
            grpcclient.InferInput(tensor.name, list(feeds[tensor.name].shape), wire_dtype(tensor.dtype))
        )
        inputs[-1].set_data_from_numpy(feeds[tensor.name])
    return inputs


def _expected(loaded: LoadedModel, feeds: dict[str, Array]) -> Array:
    with torch.no_grad():
        out: Array = loaded.module(*(torch.from_numpy(feeds[n]) for n in loaded.spec.input_names)).numpy()
    return out


def test_new_version_is_served_without_restart_or_failures(
    tmp_path: Path, triton_server_factory: ServerFactory
) -> None:
    old, new = _model(tmp_path, 0), _model(tmp_path, 1)
    repo = tmp_path / "repo"
    export_to_repository(old, [Format.ONNX], repo)
    server = triton_server_factory(repo, model_control_mode="poll", extra_args=POLL_ARGS)
    feeds = old.spec.random_inputs(4)
    want = {"1": _expected(old, feeds), "2": _expected(new, feeds)}
    seen: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        while not stop.is_set():
            try:
                result = client.infer(MODEL, _inputs(feeds, old))
            except Exception as exc:  # every failure counts, whatever its type
                errors.append(str(exc))
                continue
            version = result.get_response().model_version
            got = result.as_numpy(old.spec.output_names[0])
            if got is None or not np.allclose(got, want[version], rtol=1e-4, atol=1e-5):
                errors.append(f"v{version} answered with other outputs")
            seen.append(version)

    # Triton skips version directories that are not numbers (a hidden staging one included); it
    # does poll hidden directories at the top level, so exports never stage there.
    (repo / MODEL / ".staging-x" / "3").mkdir(parents=True)
    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        time.sleep(1.5)
        export_to_repository(new, [Format.ONNX], repo)  # version 2, published by one rename
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and seen[-1:] != ["2"]:
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert seen[0] == "1" and seen[-1] == "2"
    assert seen.index("2") > 0 and "1" not in seen[seen.index("2") + 10 :]
    index = grpcclient.InferenceServerClient(server.grpc_url).get_model_repository_index(as_json=True)
    ready = {(m["name"], m.get("version")) for m in index["models"] if m.get("state") == "READY"}
    assert ready == {(MODEL, "2")}
    assert {m["name"] for m in index["models"]} == {MODEL}
    assert "Poll failed" not in server.log_path.read_text()
    server.stop()
