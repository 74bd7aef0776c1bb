"""The spine, end to end on real parts: trained checkpoint → export → embedded Triton → gRPC.

One repository holds every reference model (tiny preset) in every format plus a custom
`module:callable` model; one Triton serves them all for this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from tests.custom_models import make_scorer
from tritonstack import recsys
from tritonstack.client import TritonClient
from tritonstack.errors import InvalidInput, ModelNotFound
from tritonstack.export.checkpoint import LoadedModel, ModelSource, load_model
from tritonstack.export.custom import CustomArch, parse_input
from tritonstack.export.pipeline import ExportResult, export_to_repository, repository_name
from tritonstack.export.verify import compare
from tritonstack.formats import DEFAULT_FORMATS, Format
from tritonstack.recsys.train import train
from tritonstack.runtimes.runners import TorchRunner
from tritonstack.serve import TritonServer
from tritonstack.spec import Array, wire_dtype

pytestmark = pytest.mark.server

MAX_BATCH = 16


@dataclass(frozen=True)
class Served:
    loaded: dict[str, LoadedModel]
    results: dict[str, ExportResult]
    url: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("e2e")
    repo = root / "repo"
    loaded: dict[str, LoadedModel] = {}
    for name in recsys.ARCHITECTURES:
        checkpoint = root / f"{name}.pt"
        train(
            name,
            recsys.get_architecture(name).preset("tiny"),
            steps=5,
            batch_size=64,
            lr=1e-3,
            seed=0,
            checkpoint_path=checkpoint,
        )
        loaded[name] = load_model(checkpoint, max_batch_size=MAX_BATCH)
    custom_ckpt = root / "scorer.pt"
    torch.save(make_scorer().state_dict(), custom_ckpt)
    custom = CustomArch(
        "tests.custom_models:make_scorer",
        (parse_input("ids:int64:3:50"), parse_input("dense:float32:4")),
        ("p",),
    )
    loaded["scorer"] = load_model(
        custom_ckpt, ModelSource(custom=custom), name="scorer", max_batch_size=MAX_BATCH
    )
    results = {
        r.model_name: r
        for model in loaded.values()
        for r in export_to_repository(model, DEFAULT_FORMATS, repo)
    }
    with TritonServer(repo) as server:
        yield Served(loaded, results, server.grpc_url)


@pytest.fixture()
def triton(served: Served) -> Iterator[TritonClient]:
    with TritonClient(served.url, timeout=30.0) as client:
        yield client


CASES = [(model, fmt) for model in [*recsys.ARCHITECTURES, "scorer"] for fmt in DEFAULT_FORMATS]


@pytest.mark.parametrize(("model", "fmt"), CASES, ids=[f"{m}-{f.value}" for m, f in CASES])
@pytest.mark.parametrize("batch", [1, 7, MAX_BATCH])
def test_served_outputs_match_pytorch(
    served: Served, triton: TritonClient, model: str, fmt: Format, batch: int
) -> None:
    loaded = served.loaded[model]
    name = repository_name(loaded.spec.name, fmt)
    feeds = loaded.spec.random_inputs(batch, seed=batch)
    got = triton.infer(name, feeds)
    for output, want in TorchRunner(loaded.module, loaded.spec).infer(feeds).items():
        max_abs, _, ok = compare(output, got[output], want)
        assert ok, f"{name}.{output}: max abs diff {max_abs}"


def test_every_model_is_ready_at_version_1(served: Served, triton: TritonClient) -> None:
    ready = {(m.name, m.version) for m in triton.list_models() if m.state == "READY"}
    assert ready == {(name, "1") for name in served.results}


def test_served_spec_matches_export(served: Served, triton: TritonClient) -> None:
    for name, result in served.results.items():
        spec = triton.model_spec(name)
        exported = served.loaded[result.model_name.removesuffix(f"_{result.format.value}")].spec
        assert [(t.name, t.dtype, t.shape) for t in spec.inputs] == [
            (t.name, t.dtype, t.shape) for t in exported.inputs
        ]
        assert spec.max_batch_size == MAX_BATCH


def _dlrm_feeds(served: Served, batch: int = 2) -> dict[str, Array]:
    return served.loaded["dlrm"].spec.random_inputs(batch)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda f: {"dense": f["dense_features"], "sparse_features": f["sparse_features"]},
            "unknown input 'dense'",
        ),
        (lambda f: {**f, "dense_features": f["dense_features"].astype(np.float64)}, "float64"),
        (lambda f: {**f, "dense_features": f["dense_features"][:, :5]}, "dense_features"),
        (lambda f: {"dense_features": f["dense_features"]}, "sparse_features"),
    ],
    ids=["wrong-name", "wrong-dtype", "wrong-shape", "missing-input"],
)
def test_bad_requests_get_a_clear_error_and_the_server_stays_healthy(
    served: Served, triton: TritonClient, mutate: object, message: str
) -> None:
    feeds = mutate(_dlrm_feeds(served))  # type: ignore[operator]
    with pytest.raises(InvalidInput, match=message) as err:
        triton.infer("dlrm_onnx", feeds)
    assert err.value.model == "dlrm_onnx"
    assert triton.is_ready()
    assert triton.infer("dlrm_onnx", _dlrm_feeds(served))["probability"].shape == (2, 1)


def test_batch_above_max_batch_size_is_refused(served: Served, triton: TritonClient) -> None:
    with pytest.raises(InvalidInput, match=str(MAX_BATCH)):
        triton.infer("dlrm_torchscript", _dlrm_feeds(served, MAX_BATCH + 1))
    assert triton.is_ready()


def test_unknown_model(triton: TritonClient) -> None:
    with pytest.raises(ModelNotFound, match="no_such_model"):
        triton.infer("no_such_model", {"x": np.zeros((1, 1), np.float32)})


def test_repository_layout(served: Served) -> None:
    for result in served.results.values():
        assert (result.version_dir / result.format.filename).is_file()
        assert (result.version_dir.parent / "config.pbtxt").is_file()
    leftovers = [
        p
        for p in Path(next(iter(served.results.values())).version_dir).parents[1].iterdir()
        if p.name.startswith(".")
    ]
    assert leftovers == []


def test_served_spec_carries_id_ranges(served: Served, triton: TritonClient) -> None:
    assert triton.model_spec("dlrm_onnx").inputs[1].high == served.loaded["dlrm"].spec.inputs[1].high


@pytest.mark.parametrize("fmt", DEFAULT_FORMATS)
def test_out_of_range_id_is_refused_by_the_client_and_never_reads_another_tables_row(
    served: Served, triton: TritonClient, fmt: Format
) -> None:
    """DLRM fuses its tables: an id past its own table would read the next table's row. The client
    refuses it; a caller that skips our client gets what the graph itself computes (an id outside
    its table embeds as zeros), as it would from Triton's native backends."""
    spec = served.loaded["dlrm"].spec
    feeds = spec.random_inputs(2)
    high = spec.inputs[1].high
    assert isinstance(high, tuple)
    feeds["sparse_features"][1, 0] = high[0]  # one past table 0: a valid row of table 1
    name = repository_name("dlrm", fmt)
    with pytest.raises(InvalidInput, match=r"sparse_features.*outside \[0, "):
        triton.infer(name, feeds)
    raw = grpcclient.InferenceServerClient(served.url)
    inputs = []
    for tensor in spec.inputs:
        value = feeds[tensor.name]
        inputs.append(grpcclient.InferInput(tensor.name, list(value.shape), wire_dtype(tensor.dtype)))
        inputs[-1].set_data_from_numpy(value)
    answer = raw.infer(name, inputs).as_numpy("probability")
    eager = TorchRunner(served.loaded["dlrm"].module, spec).infer(feeds)["probability"]
    np.testing.assert_allclose(answer, eager, rtol=1e-5, atol=1e-6)
    assert triton.infer(name, spec.random_inputs(2))["probability"].shape == (2, 1)
