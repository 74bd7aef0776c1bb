"""`models promote` and `models prune --yes` on s3:// ended by SIGTERM or SIGINT (a real subprocess,
a real signal, moto's store): each releases its own lock, so the next publisher goes on at once, and
leaves the store with its change whole or not at all (before: SIGTERM left the lock object, and
both signals left tritonstack.json changed without the config, or a pruned version half there)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tests.s3_store import BUCKET, objects
from tritonstack.cli import main
from tritonstack.export import object_store
from tritonstack.export.repository import build_config, write_version
from tritonstack.export.state import STATE_NAME, record_export
from tritonstack.formats import Format
from tritonstack.spec import CONFIG_NAME, ModelSpec, TensorSpec

MODEL = "a_onnx"

# `tritonstack ...` that stops once, until a signal ends it, at the point named by argv[1]: right
# after uploading tritonstack.json (before the config that serves the change), or right before
# deleting objects (the pruned versions', once tritonstack.json no longer records them).
PAUSED = """
import sys, time
from tritonstack.cli import main
from tritonstack.export import object_store

where = sys.argv[1]
paused = []

def pause():
    if not paused:
        paused.append(True)
        print("paused", flush=True)
        time.sleep(600)

class Paused(object_store.Bucket):
    def upload(self, path, key):
        super().upload(path, key)
        if where == "after the registry" and key == "tritonstack.json":
            pause()

    def delete(self, keys):
        if where == "before deleting" and keys:
            pause()
        super().delete(keys)

object_store.Bucket = Paused
sys.exit(main(sys.argv[2:]))
"""


def _three_versions(tmp_path: Path) -> Path:
    """A local repository with a_onnx v1, v2, v3 recorded, none with a status."""
    local, artifact = tmp_path / "repo", tmp_path / "model.onnx"
    artifact.write_bytes(b"weights")
    spec = ModelSpec(MODEL, (TensorSpec("x", "float32", (4,)),), (TensorSpec("y", "float32", (1,)),))
    for _ in range(3):
        version_dir = write_version(local, MODEL, build_config(spec, Format.ONNX), {"model.onnx": artifact})
        record_export(version_dir, {"status": None})
    return local


@pytest.fixture()
def repo(s3_store: str, tmp_path: Path) -> str:
    """a_onnx v1, v2, v3 on the store (no status: Triton's default policy), recorded."""
    local = _three_versions(tmp_path)
    prefix = tmp_path.name.replace("_", "-")  # unique in the session
    for path in local.rglob("*"):
        if path.is_file():
            boto3.client("s3").upload_file(
                str(path), BUCKET, f"{prefix}/{path.relative_to(local).as_posix()}"
            )
    return f"s3://{BUCKET}/{prefix}"


def _store(repo: str) -> dict[str, bytes]:
    prefix = repo.removeprefix(f"s3://{BUCKET}/") + "/"
    return {key.removeprefix(prefix): data for key, data in objects(BUCKET, prefix).items()}


def _state(repo: str) -> dict[str, Any]:
    versions: dict[str, Any] = json.loads(_store(repo)[STATE_NAME])["models"][MODEL]
    return versions


def _served(repo: str) -> list[int]:
    config = text_format.Parse(_store(repo)[f"{MODEL}/{CONFIG_NAME}"].decode(), pb.ModelConfig())
    return list(config.version_policy.specific.versions)


def _end_paused(repo: str, where: str, command: list[str], signum: signal.Signals) -> tuple[int, str]:
    """Run `command` on `repo` until it pauses `where`, with its lock held; end it by `signum`;
    its exit status and what it said."""
    argv = [sys.executable, "-c", PAUSED, where, *command, "--repo", repo]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        assert "paused\n" in iter(process.stdout.readline, ""), process.communicate(timeout=60)
        assert object_store.LOCK_KEY in _store(repo)
        process.send_signal(signum)
        said = process.communicate(timeout=60)[0]
    assert object_store.LOCK_KEY not in _store(repo), said[-2000:]  # before (SIGTERM): left there
    return process.returncode, said


def _stopped(ended: tuple[int, str], signum: signal.Signals) -> None:
    code, said = ended
    assert code == 128 + signum, said[-2000:]
    assert f"stopped by {signum.name}" in said and "could not" not in said, said[-2000:]


PROMOTE = ["models", "promote", MODEL, "2", "--status", "production"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_promote_ended_before_its_config_takes_back_its_status(
    repo: str, signum: signal.Signals, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ended once tritonstack.json records v2 as production but before the config serves it: the
    store is again what it was (before: the status stayed, the config did not follow)."""
    before = _store(repo)
    ended = _end_paused(repo, "after the registry", PROMOTE, signum)
    assert _store(repo) == before
    _stopped(ended, signum)
    monkeypatch.setattr(object_store, "LOCK_WAIT_S", 1.0)
    assert main([*PROMOTE, "--repo", repo]) == 0
    assert _state(repo)["2"]["status"] == "production" and _served(repo) == [2]


def test_a_prune_ended_while_deleting_finishes(repo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ended once tritonstack.json no longer records v1 and v2, before their objects are deleted:
    the handler deletes them, so no half-pruned version is left (before: the lock and both
    versions' objects stayed, unrecorded)."""
    prune = ["models", "prune", MODEL, "--keep", "1", "--yes"]
    ended = _end_paused(repo, "before deleting", prune, signal.SIGTERM)
    assert sorted(_store(repo)) == [f"{MODEL}/3/model.onnx", f"{MODEL}/{CONFIG_NAME}", STATE_NAME]
    assert list(_state(repo)) == ["3"]
    _stopped(ended, signal.SIGTERM)
    monkeypatch.setattr(object_store, "LOCK_WAIT_S", 1.0)
    assert main(["models", "promote", MODEL, "3", "--status", "staging", "--repo", repo]) == 0
    assert _served(repo) == [3]


# `tritonstack ...` on a local repository that stops for a while (not until the signal: the
# signal may wait for it) right before promote writes the config, its statuses already written.
LOCAL_PAUSED = """
import sys, time
from tritonstack.cli import main
from tritonstack.export import registry

write_config = registry.write_config

def paused(path, config):
    print("paused", flush=True)
    time.sleep(3)
    write_config(path, config)

registry.write_config = paused
sys.exit(main(sys.argv[1:]))
"""


def test_a_local_promote_ended_between_status_and_policy_finishes_both(tmp_path: Path) -> None:
    """SIGTERM once the statuses are written, before the policy: the signal waits the few
    milliseconds (here the pause) until both are written (before: it ended there, v2 production
    in tritonstack.json while the config still served every version)."""
    local = _three_versions(tmp_path)
    argv = [sys.executable, "-c", LOCAL_PAUSED, *PROMOTE, "--repo", str(local)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        assert "paused\n" in iter(process.stdout.readline, ""), process.communicate(timeout=60)
        process.send_signal(signal.SIGTERM)
        said = process.communicate(timeout=60)[0]
    state = json.loads((local / STATE_NAME).read_text())["models"][MODEL]
    assert state["2"]["status"] == "production"
    config = text_format.Parse((local / MODEL / CONFIG_NAME).read_text(), pb.ModelConfig())
    assert list(config.version_policy.specific.versions) == [2], said[-2000:]
    _stopped((process.returncode, said), signal.SIGTERM)
