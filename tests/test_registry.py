"""`tritonstack models`: listing, promote (and what Triton then serves), prune safety."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerFactory
from tritonstack import recsys
from tritonstack.cli import main
from tritonstack.client import AsyncTritonClient, TritonClient
from tritonstack.export.checkpoint import load_model
from tritonstack.export.pipeline import export_to_repository
from tritonstack.export.registry import (
    client_default_version,
    default_version,
    list_registry,
    served_versions,
)
from tritonstack.export.repository import build_config, list_versions, write_version
from tritonstack.export.state import read_metadata, record_export, update_metadata
from tritonstack.formats import Format
from tritonstack.recsys.train import train
from tritonstack.spec import (
    CONFIG_NAME,
    PRODUCTION_VERSION_PARAMETER,
    Array,
    ModelSpec,
    read_config,
    wire_dtype,
)

MODEL = "dlrm_onnx"


@pytest.fixture()
def repo(tmp_path: Path, exported: Path) -> Path:
    shutil.copytree(exported, tmp_path / "repo")
    return tmp_path / "repo"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three versions of one model (copies of one export: Triton tells versions apart by number)."""
    root = tmp_path_factory.mktemp("registry")
    config = recsys.get_architecture("dlrm").preset("tiny")
    train("dlrm", config, steps=3, batch_size=32, lr=1e-3, seed=0, checkpoint_path=root / "dlrm.pt")
    export_to_repository(load_model(root / "dlrm.pt", max_batch_size=4), [Format.ONNX], root / "repo")
    metadata = read_metadata(root / "repo" / MODEL / "1") or {}
    for version in (2, 3):
        shutil.copytree(root / "repo" / MODEL / "1", root / "repo" / MODEL / f".tmp{version}")
        os.rename(root / "repo" / MODEL / f".tmp{version}", root / "repo" / MODEL / str(version))
        record_export(root / "repo" / MODEL / str(version), metadata)  # as an export records it
    return root / "repo"


@pytest.fixture(scope="module")
def distinct(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Versions 1 and 2 exported from differently seeded checkpoints, so their outputs differ."""
    root = tmp_path_factory.mktemp("distinct")
    (root / "repo" / MODEL).mkdir(parents=True)
    shutil.copy(exported / MODEL / CONFIG_NAME, root / "repo" / MODEL / CONFIG_NAME)
    shutil.copytree(exported / MODEL / "1", root / "repo" / MODEL / "1")
    config = recsys.get_architecture("dlrm").preset("tiny")
    train("dlrm", config, steps=3, batch_size=32, lr=1e-3, seed=1, checkpoint_path=root / "dlrm.pt")
    export_to_repository(load_model(root / "dlrm.pt", max_batch_size=4), [Format.ONNX], root / "repo")
    assert list_versions(root / "repo", MODEL) == [1, 2]
    return root / "repo"


def test_list_table_and_json(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    version_dir = repo / MODEL / "2"
    update_metadata(version_dir, benchmark={"p50_ms": 1.25})
    assert main(["models", "--repo", str(repo), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["version"], r["format"]) for r in rows] == [(MODEL, v, "onnx") for v in (1, 2, 3)]
    assert [r["latency_ms"] for r in rows] == [None, 1.25, None]
    assert rows[-1]["notes"] == "default" and rows[0]["status"] is None
    assert main(["models", "--repo", str(repo)]) == 0
    table = capsys.readouterr().out
    assert "1.25 ms" in table and "—" in table and "Latency" in table


def test_promote_sets_status_and_version_policy(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "promote", MODEL, "3", "--status", "production", "--repo", str(repo)]) == 0
    assert main(["models", "promote", MODEL, "1", "--status", "staging", "--repo", str(repo)]) == 0
    assert served_versions(repo, MODEL) == [1, 3] and default_version(repo, MODEL) == 3
    assert "unversioned requests go to v3" in capsys.readouterr().out
    assert main(["models", "promote", MODEL, "2", "--status", "production", "--repo", str(repo)]) == 0
    assert [(r.version, r.status) for r in list_registry(repo)] == [
        (1, "staging"),
        (2, "production"),
        (3, None),
    ]
    assert served_versions(repo, MODEL) == [1, 2]
    assert main(["models", "promote", MODEL, "9", "--status", "staging", "--repo", str(repo)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_promote_staging_above_production_becomes_the_default(repo: Path) -> None:
    """Triton answers unversioned requests with the highest loaded version, whatever its status."""
    main(["models", "promote", MODEL, "2", "--status", "production", "--repo", str(repo)])
    main(["models", "promote", MODEL, "3", "--status", "staging", "--repo", str(repo)])
    assert default_version(repo, MODEL) == 3
    assert "default" in next(r.notes for r in list_registry(repo) if r.version == 3)


def test_a_new_export_keeps_the_policy_and_the_production_version(repo: Path, exported: Path) -> None:
    """The exporter writes a fresh config.pbtxt; the registry's fields survive it, so the new
    version is not loaded until promoted and production stays the default for our clients."""
    main(["models", "promote", MODEL, "1", "--status", "production", "--repo", str(repo)])
    spec = load_model(exported.parent / "dlrm.pt", max_batch_size=4).spec.renamed(MODEL)
    write_version(
        repo, MODEL, build_config(spec, Format.ONNX), {"model.onnx": repo / MODEL / "1" / "model.onnx"}
    )
    assert list_versions(repo, MODEL) == [1, 2, 3, 4]
    assert served_versions(repo, MODEL) == [1] and client_default_version(repo, MODEL) == 1
    assert next(r.notes for r in list_registry(repo) if r.version == 4) == "no metadata, not loaded"


def test_prune_keeps_production_and_is_a_dry_run_by_default(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["models", "promote", MODEL, "1", "--status", "production", "--repo", str(repo)])
    capsys.readouterr()
    assert main(["models", "prune", MODEL, "--keep", "1", "--repo", str(repo)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"would remove {MODEL} v2",
        "dry run: pass --yes to remove them",
    ]
    assert list_versions(repo, MODEL) == [1, 2, 3]
    assert main(["models", "prune", MODEL, "--keep", "1", "--yes", "--repo", str(repo)]) == 0
    assert list_versions(repo, MODEL) == [1, 3]
    assert read_metadata(repo / MODEL / "2") is None  # its entry left the repository's state too
    assert not [p for p in (repo / MODEL).iterdir() if p.name.startswith(".pruned")]


def _infer_version(url: str, spec: ModelSpec, version: int | None) -> str:
    raw = grpcclient.InferenceServerClient(url)
    inputs = []
    for name, value in spec.random_inputs(2).items():
        tensor = next(t for t in spec.inputs if t.name == name)
        inputs.append(grpcclient.InferInput(name, list(value.shape), wire_dtype(tensor.dtype)))
        inputs[-1].set_data_from_numpy(value)
    result = raw.infer(MODEL, inputs, model_version="" if version is None else str(version))
    served: str = result.get_response().model_version
    return served


def test_triton_serves_what_the_policy_says(
    repo: Path, exported: Path, triton_server_factory: ServerFactory
) -> None:
    main(["models", "promote", MODEL, "2", "--status", "production", "--repo", str(repo)])
    main(["models", "promote", MODEL, "1", "--status", "staging", "--repo", str(repo)])
    server = triton_server_factory(repo)
    spec = load_model(exported.parent / "dlrm.pt", max_batch_size=4).spec
    assert _infer_version(server.grpc_url, spec, None) == "2"  # production is the default
    assert _infer_version(server.grpc_url, spec, 1) == "1"  # staging answers by version
    with pytest.raises(InferenceServerException):
        _infer_version(server.grpc_url, spec, 3)  # unlisted: not loaded
    server.stop()


def test_our_clients_send_unversioned_requests_to_production(
    distinct: Path, triton_server_factory: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Production v1 below staging v2: Triton's default is v2, ours is v1; explicit versions stay."""
    repo = distinct
    assert main(["models", "promote", MODEL, "1", "--status", "production", "--repo", str(repo)]) == 0
    assert main(["models", "promote", MODEL, "2", "--status", "staging", "--repo", str(repo)]) == 0
    printed = capsys.readouterr().out.splitlines()[-1]
    assert printed.endswith("v1 from tritonstack clients, v2 from other Triton clients (the highest loaded)")
    parameters = read_config(repo / MODEL / CONFIG_NAME).parameters
    assert parameters[PRODUCTION_VERSION_PARAMETER].string_value == "1"
    assert (client_default_version(repo, MODEL), default_version(repo, MODEL)) == (1, 2)
    notes = [r.notes for r in list_registry(repo)]
    assert notes == ["default (tritonstack clients)", "default (other clients)"]

    server = triton_server_factory(repo)
    with TritonClient(server.grpc_url) as triton:
        spec = triton.model_spec(MODEL)
        inputs = spec.random_inputs(4)
        (output,) = spec.output_names
        by_version = {v: triton.infer(MODEL, inputs, version=v)[output] for v in (1, 2)}
        assert not np.allclose(by_version[1], by_version[2])  # the two versions are told apart
        np.testing.assert_array_equal(triton.infer(MODEL, inputs)[output], by_version[1])

    async def unversioned_and_v2() -> tuple[Array, Array]:
        async with AsyncTritonClient(server.grpc_url) as aio:
            unversioned = await aio.infer(MODEL, inputs)
            return unversioned[output], (await aio.infer(MODEL, inputs, version=2))[output]

    unversioned, v2 = asyncio.run(unversioned_and_v2())
    np.testing.assert_array_equal(unversioned, by_version[1])
    np.testing.assert_array_equal(v2, by_version[2])
    assert _infer_version(server.grpc_url, spec, None) == "2"  # a raw Triton client: highest loaded
    server.stop()
