"""`export --export-embeddings`: the served two-tower score equals the dot product of the tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.conftest import ServerFactory
from tritonstack import recsys
from tritonstack.cli import main
from tritonstack.export.metadata import file_sha256
from tritonstack.export.state import read_metadata
from tritonstack.recsys.train import train

pytestmark = pytest.mark.server


def test_served_score_is_the_dot_of_exported_embeddings(
    tmp_path: Path, triton_server_factory: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    config = recsys.get_architecture("two_tower").preset("tiny")
    checkpoint = tmp_path / "two_tower.pt"
    train("two_tower", config, steps=3, batch_size=32, lr=1e-3, seed=0, checkpoint_path=checkpoint)
    repo = tmp_path / "repo"
    args = ["export", str(checkpoint), "--formats", "onnx", "--repo", str(repo), "--max-batch-size", "16"]
    assert main([*args, "--export-embeddings"]) == 0
    version_dir = repo / "two_tower_onnx" / "1"
    manifest = json.loads((version_dir / "embeddings.json").read_text())
    users, items = np.load(version_dir / "user_embeddings.npy"), np.load(version_dir / "item_embeddings.npy")
    assert manifest["user"]["shape"] == [100, 8] == list(users.shape) and users.dtype == np.float32
    assert manifest["item"]["shape"] == [60, 8] == list(items.shape)
    assert manifest["checkpoint_sha256"] == file_sha256(checkpoint)
    recorded = (read_metadata(version_dir) or {})["command"]
    assert "--export-embeddings" in recorded.split()  # the reproducing command writes them too

    user_ids, item_ids = np.array([0, 7, 42, 99]), np.array([59, 3, 0, 30])
    user_rows = np.zeros((4, len(config.user_vocab_sizes)), np.int64)
    item_rows = np.zeros((4, len(config.item_vocab_sizes)), np.int64)
    user_rows[:, 0], item_rows[:, 0] = user_ids, item_ids
    server = triton_server_factory(repo)
    inputs = [grpcclient.InferInput("user_features", [4, 3], "INT64")]
    inputs.append(grpcclient.InferInput("item_features", [4, 2], "INT64"))
    inputs[0].set_data_from_numpy(user_rows)
    inputs[1].set_data_from_numpy(item_rows)
    score = (
        grpcclient.InferenceServerClient(server.grpc_url).infer("two_tower_onnx", inputs).as_numpy("score")
    )
    assert score is not None
    expected = np.sum(users[user_ids] * items[item_ids], axis=1, keepdims=True)
    np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-5)
    server.stop()

    capsys.readouterr()
    dlrm = tmp_path / "dlrm.pt"
    train("dlrm", recsys.get_architecture("dlrm").preset("tiny"), steps=1, batch_size=8, lr=1e-3, seed=0,
          checkpoint_path=dlrm)  # fmt: skip
    assert main(["export", str(dlrm), "--repo", str(repo), "--export-embeddings"]) == 2
    assert "needs a two-tower model" in capsys.readouterr().err
