"""Issue 16, item 1: `export`, `export-all` and `models` on `s3://BUCKET/PREFIX`, against moto's S3
server on 127.0.0.1: objects land in the store (no local folder named `s3:`), a version becomes
visible only once complete, concurrent publishers get distinct whole versions, and the store's
failures are one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tests.s3_store import BUCKET, objects
from tritonstack import recsys
from tritonstack.cli import main
from tritonstack.export import object_store
from tritonstack.recsys.train import train
from tritonstack.storage.s3 import Bucket

CLI = [sys.executable, "-m", "tritonstack.cli"]
REPO = f"s3://{BUCKET}/prod"
MODEL = "dlrm_onnx"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny DLRM checkpoints with different weights."""
    root = tmp_path_factory.mktemp("ckpt")
    preset = recsys.get_architecture("dlrm").preset("tiny")
    for seed in (0, 1):
        train("dlrm", preset, steps=2, batch_size=32, lr=1e-3, seed=seed, checkpoint_path=root / f"{seed}.pt")
    return [root / "0.pt", root / "1.pt"]


@pytest.fixture()
def repo(s3_store: str, request: pytest.FixtureRequest) -> str:
    """A fresh prefix per test."""
    return f"{REPO}-{request.node.name.replace('_', '-')[:40]}"


def _export(checkpoint: Path, repo: str) -> int:
    return main(["export", str(checkpoint), "--repo", repo, "--formats", "onnx", "--max-batch-size", "8"])


def _prefix(repo: str) -> str:
    return repo.removeprefix(f"s3://{BUCKET}/") + "/"


def _state(repo: str) -> dict[str, Any]:
    """The registry's record of each version, by model and version (tritonstack.json)."""
    models: dict[str, Any] = json.loads(objects(BUCKET, _prefix(repo) + "tritonstack.json").popitem()[1])[
        "models"
    ]
    return models


def _config(repo: str) -> pb.ModelConfig:
    data = objects(BUCKET, _prefix(repo) + f"{MODEL}/config.pbtxt")[_prefix(repo) + f"{MODEL}/config.pbtxt"]
    return text_format.Parse(data.decode(), pb.ModelConfig())


def test_export_publishes_to_the_store_and_writes_no_local_folder(
    repo: str, checkpoints: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _export(checkpoints[0], repo) == 0
    assert list(tmp_path.iterdir()) == []  # before: a folder named `s3:`
    keys = {k.removeprefix(_prefix(repo)) for k in objects(BUCKET, _prefix(repo))}
    assert keys == {"tritonstack.json", f"{MODEL}/config.pbtxt", f"{MODEL}/1/model.onnx"}
    meta = _state(repo)[MODEL]["1"]
    assert f"--repo {repo} " in meta["command"]  # re-exports into the store, not a temporary mirror
    assert _export(checkpoints[1], repo) == 0
    assert f"{_prefix(repo)}{MODEL}/2/model.onnx" in objects(BUCKET, _prefix(repo))
    assert ".tritonstack-lock" not in {k.rsplit("/", 1)[-1] for k in objects(BUCKET, _prefix(repo))}


def test_models_promote_and_prune_on_the_store(
    repo: str, checkpoints: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    for checkpoint in (*checkpoints, checkpoints[0]):
        assert _export(checkpoint, repo) == 0
    assert main(["models", "promote", MODEL, "2", "--status", "production", "--repo", repo]) == 0
    assert list(_config(repo).version_policy.specific.versions) == [2]
    assert main(["models", "prune", MODEL, "--keep", "1", "--yes", "--repo", repo]) == 0
    keys = objects(BUCKET, _prefix(repo))
    assert {k.split("/")[-2] for k in keys if k.endswith("model.onnx")} == {
        "2",
        "3",
    }  # 1 pruned, 2 has a status
    capsys.readouterr()
    assert main(["models", "--repo", repo, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["status"]) for r in rows] == [(2, "production"), (3, None)]


def test_a_new_version_stays_out_of_the_served_set_until_complete(
    repo: str, checkpoints: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While version 2's objects upload, the store's config serves version 1 by number (a polling
    Triton ignores the filling directory); the config restoring "latest" comes after the last one."""
    assert _export(checkpoints[0], repo) == 0
    assert _config(repo).version_policy.WhichOneof("policy_choice") is None  # latest
    seen: list[tuple[str, str | None, list[int]]] = []

    class Watched(Bucket):
        def upload(self, path: Path, key: str) -> None:
            policy = _config(repo).version_policy
            seen.append((key, policy.WhichOneof("policy_choice"), list(policy.specific.versions)))
            super().upload(path, key)

    monkeypatch.setattr(object_store, "Bucket", Watched)
    assert _export(checkpoints[1], repo) == 0
    assert [key for key, _, _ in seen][-1] == f"{MODEL}/config.pbtxt"
    assert all(
        (kind, served) == ("specific", [1]) for key, kind, served in seen if key.startswith(f"{MODEL}/2/")
    )
    assert _config(repo).version_policy.WhichOneof("policy_choice") is None  # latest again: 2 loads


def test_concurrent_publishers_get_distinct_whole_versions(repo: str, checkpoints: list[Path]) -> None:
    command = [*CLI, "export", "--repo", repo, "--formats", "onnx", "--max-batch-size", "8"]
    runs = [subprocess.Popen([*command, str(c)], stderr=subprocess.PIPE, text=True) for c in checkpoints]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    store = objects(BUCKET, _prefix(repo))
    published = {}
    for version in ("1", "2"):
        meta = _state(repo)[MODEL][version]
        artifact = store[f"{_prefix(repo)}{MODEL}/{version}/model.onnx"]
        assert meta["artifact"]["bytes"] == len(artifact)
        published[version] = (meta["source"]["path"], _sha256(artifact), meta["artifact"]["sha256"])
    assert {p[0] for p in published.values()} == {str(c.resolve()) for c in checkpoints}
    assert all(sha == recorded for _, sha, recorded in published.values())  # no version mixes two exports


def test_a_held_lock_stops_a_publisher_with_one_line(
    repo: str, checkpoints: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(object_store, "LOCK_WAIT_S", 1.0)
    import boto3

    holder = json.dumps({"host": "elsewhere", "pid": 1})
    boto3.client("s3").put_object(Bucket=BUCKET, Key=f"{_prefix(repo)}.tritonstack-lock", Body=holder)
    assert _export(checkpoints[0], repo) == 2
    err = capsys.readouterr().err.strip()
    assert "another publisher" in err and "elsewhere" in err and "\n" not in err
    assert f"{_prefix(repo)}{MODEL}/config.pbtxt" not in objects(BUCKET, _prefix(repo))


def test_a_publisher_releases_only_its_own_lock(repo: str) -> None:
    """One who judged this publisher dead deleted its lock and took it: when this one ends, the
    other's lock stays (before: deleted whoever held it)."""
    import boto3

    other = json.dumps({"host": "elsewhere", "pid": 1, "token": "theirs"}).encode()
    with object_store.open_repository(repo, write=True):
        lock = f"{_prefix(repo)}.tritonstack-lock"
        assert lock in objects(BUCKET, lock)
        boto3.client("s3").put_object(Bucket=BUCKET, Key=lock, Body=other)
    assert objects(BUCKET, _prefix(repo)) == {lock: other}


@pytest.mark.parametrize(
    ("env", "repo_url", "expected"),
    [
        ({}, "s3://no-such-bucket/prod", "no bucket 'no-such-bucket'"),
        ({"AWS_ACCESS_KEY_ID": None}, REPO, "no credentials"),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}, REPO, "cannot reach"),
        ({}, "gs://models/prod", "only s3://"),
        ({}, "s3://127.0.0.1:9000/models", "AWS_ENDPOINT_URL"),
    ],
)
def test_store_failures_are_one_line(
    s3_store: str,
    checkpoints: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str | None],
    repo_url: str,
    expected: str,
) -> None:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, value)
    for argv in (
        ["export", str(checkpoints[0]), "--repo", repo_url, "--formats", "onnx"],
        ["models", "--repo", repo_url],
        ["serve", "--repo", repo_url],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, err


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_export_all_publishes_each_checkpoint_once(
    repo: str, checkpoints: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The second run finds what the first published (the state read back from the store)."""
    argv = [
        "export-all",
        str(checkpoints[0].parent),
        "--repo",
        repo,
        "--formats",
        "onnx",
        "--max-batch-size",
        "8",
    ]
    assert main(argv) == 0
    assert "2 converted" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 converted, 2 skipped" in capsys.readouterr().out
    keys = objects(BUCKET, _prefix(repo))
    assert {k.removeprefix(_prefix(repo)) for k in keys if k.endswith("model.onnx")} == {
        f"{MODEL}/1/model.onnx",
        f"{MODEL}/2/model.onnx",
    }


# -- an export ended by a signal --------------------------------------------------------------------

# `tritonstack export` that stops, until a signal ends it, once it has uploaded tritonstack.json:
# the new version's objects are in the store and its config pins the versions served before.
EXPORT_PAUSED_IN_PUBLISH = """
import sys, time
from tritonstack.cli import main
from tritonstack.export import object_store

class Paused(object_store.Bucket):
    def upload(self, path, key):
        super().upload(path, key)
        if key == "tritonstack.json":
            print("paused", flush=True)
            time.sleep(600)

object_store.Bucket = Paused
sys.exit(main(sys.argv[1:]))
"""


def _export_command(checkpoint: Path, repo: str) -> list[str]:
    return ["export", str(checkpoint), "--repo", repo, "--formats", "onnx", "--max-batch-size", "8"]


def _ended(export: subprocess.Popen[str], signum: signal.Signals) -> None:
    export.send_signal(signum)
    said = "".join(out for out in export.communicate(timeout=60) if out)  # stderr, or both merged
    assert export.returncode == 128 + signum, said[-2000:]
    assert f"stopped by {signum.name}" in said and "could not" not in said, said[-2000:]


def _next_export_goes_on_at_once(checkpoint: Path, repo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(object_store, "LOCK_WAIT_S", 1.0)  # before: the lock was left, and it waited for it
    assert _export(checkpoint, repo) == 0


def test_an_export_ended_while_exporting_releases_its_lock(
    repo: str, checkpoints: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the exporter runs (the lock taken, nothing uploaded yet): the lock object and
    the local mirror are gone, and the next export publishes version 1."""
    command = [*CLI, *_export_command(checkpoints[0], repo)]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as export:
        _wait_for(lambda: any(any(p.iterdir()) for p in tmp_path.glob("tritonstack-*")))
        assert f"{_prefix(repo)}.tritonstack-lock" in objects(BUCKET, _prefix(repo))
        _ended(export, signal.SIGTERM)
    assert objects(BUCKET, _prefix(repo)) == {}
    assert list(tmp_path.glob("tritonstack-*")) == []
    _next_export_goes_on_at_once(checkpoints[0], repo, monkeypatch)
    assert list(_state(repo)[MODEL]) == ["1"]


def test_an_export_ended_while_publishing_takes_back_what_it_wrote(
    repo: str, checkpoints: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT once version 2's objects and the registry are uploaded but before the config that
    serves it: the store is again what it was before that export, the lock included."""
    assert _export(checkpoints[0], repo) == 0
    before = objects(BUCKET, _prefix(repo))
    command = [sys.executable, "-c", EXPORT_PAUSED_IN_PUBLISH, *_export_command(checkpoints[1], repo)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as export:
        assert export.stdout is not None and "paused\n" in iter(export.stdout.readline, "")
        assert f"{_prefix(repo)}{MODEL}/2/model.onnx" in objects(BUCKET, _prefix(repo))
        assert list(_config(repo).version_policy.specific.versions) == [1]
        assert list(_state(repo)[MODEL]) == ["1", "2"]
        _ended(export, signal.SIGINT)
    assert objects(BUCKET, _prefix(repo)) == before
    _next_export_goes_on_at_once(checkpoints[1], repo, monkeypatch)
    assert list(_state(repo)[MODEL]) == ["1", "2"]
    assert _config(repo).version_policy.WhichOneof("policy_choice") is None


def _wait_for(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
