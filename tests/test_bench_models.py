"""`tritonstack bench` on a user's own models that are not recommendation models, as a new user
runs it: a CNN on images, a transformer on token ids and a model with several inputs and outputs
of mixed dtypes and ranks, each saved as a bare state dict, exported with `--arch module:callable`
and measured from the repository's configs alone, on the embedded server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests import custom_models
from tritonstack.cli import main
from tritonstack.spec import read_config

ARCH = "tests.custom_models:"
# name -> (factory, export's tensor options)
MODELS = {
    "conv": ("make_conv", ["--input", "image:float32:3,32,32", "--output", "logits"]),
    "transformer": ("make_transformer", ["--input", "tokens:int64:12:100", "--output", "logits"]),
    "mixed": (
        "make_mixed_io",
        [
            "--input", "image:float32:2,6,6", "--input", "ids:int64:5:30", "--input", "mask:bool:5",
            "--input", "scale:float16:1", "--output", "score", "--output", "count", "--output", "features",
        ],
    ),
}  # fmt: skip
BATCH_SIZES = (1, 3)
WINDOWS = ["--window-s", "0.15", "--max-cell-s", "0.9", "--min-window-requests", "5", "--pool-size", "8"]


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("user-models")
    repo, out = root / "repo", root / "out"
    for name, (factory, tensors) in MODELS.items():
        checkpoint = root / f"{name}.pt"
        torch.manual_seed(0)
        torch.save(getattr(custom_models, factory)().state_dict(), checkpoint)
        code = main(
            [
                "export",
                str(checkpoint),
                "--arch",
                ARCH + factory,
                *tensors,
                "--name",
                name,
                "--repo",
                str(repo),
            ]
        )
        assert code == 0, name
    # Repository names and a base name (both formats of `mixed`); eager PyTorch beside the CNN.
    code = main(
        [
            "bench", "--repo", str(repo), "--models", "conv_onnx,transformer_torchscript,mixed",
            "--batch-sizes", ",".join(map(str, BATCH_SIZES)), "--concurrency", "2", "--request-rate", "40",
            "--out", str(out), *WINDOWS, "--reference", f"conv={root / 'conv.pt'}:{ARCH}make_conv",
        ]
    )  # fmt: skip
    assert code == 0
    return repo, json.loads((out / "results.json").read_text())


SELECTED = ("conv_onnx", "transformer_torchscript", "mixed_onnx", "mixed_torchscript")


@pytest.mark.server
def test_every_user_model_is_measured(user_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = user_run
    cells = {(c["name"], c["batch_size"], c["mode"]) for c in results["cells"]}
    assert cells == {
        (n, b, m) for n in SELECTED for b in BATCH_SIZES for m in ("concurrency", "request_rate")
    }
    for cell in results["cells"]:
        assert cell["requests"]["client"] == cell["requests"]["triton_success"] > 0
        assert 0 < cell["latency_ms"]["p50"] <= cell["latency_ms"]["p99"]
        # The embedded server runs our Python-based stand-ins, and says so.
        assert cell["served_by"]["kind"] == "python-based" and cell["served_by"]["ours"] is True
    assert [m["name"] for m in results["models"]] == list(SELECTED)
    assert results["environment"]["server"] == "embedded"


@pytest.mark.server
def test_inputs_follow_each_config(user_run: tuple[Path, dict[str, Any]]) -> None:
    """Dtypes, shapes and id ranges as each model's config.pbtxt gives them."""
    repo, results = user_run
    pools = {(c["name"], c["batch_size"]): c["pool"] for c in results["cells"]}
    for (name, batch), pool in pools.items():
        config = read_config(repo / name / "config.pbtxt")
        assert list(pool["inputs"]) == [i.name for i in config.input]
        for tensor in config.input:
            described = pool["inputs"][tensor.name]
            assert described["shape"] == [batch, *tensor.dims]
        assert pool["requests"] == 8 and pool["bytes"] == 8 * pool["bytes_per_request"]
    mixed = pools["mixed_onnx", 3]["inputs"]
    assert {k: v["dtype"] for k, v in mixed.items()} == {
        "image": "float32",
        "ids": "int64",
        "mask": "bool",
        "scale": "float16",
    }
    assert (
        mixed["ids"]["high"] == 30 and pools["transformer_torchscript", 1]["inputs"]["tokens"]["high"] == 100
    )


@pytest.mark.server
def test_baselines_run_the_artifacts_themselves(user_run: tuple[Path, dict[str, Any]]) -> None:
    """ONNX Runtime on model.onnx, TorchScript on model.pt, eager PyTorch only where asked."""
    _, results = user_run
    runtime = {"onnx": "onnxruntime", "torchscript": "torchscript"}
    expected = {(n, runtime[n.rsplit("_", 1)[1]], b) for n in SELECTED for b in BATCH_SIZES}
    found = {(b["name"], b["runtime"], b["batch_size"]) for b in results["baselines"]}
    assert expected <= found
    eager = {(b["model"], b["batch_size"]) for b in results["baselines"] if b["runtime"] == "pytorch"}
    assert eager == {("conv", b) for b in BATCH_SIZES}
    for cell in results["cells"]:
        assert cell["overhead"]["throughput_ratio"] > 0
        assert ("throughput_ratio_vs_eager" in cell["overhead"]) == (cell["model"] == "conv")
    assert all(np.isfinite(b["latency_ms"]["p50"]) for b in results["baselines"])
