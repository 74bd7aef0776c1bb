"""A `tritonstack.json` that is unreadable as a whole (truncated by another tool, a bad hand edit,
a JSON list): listing goes on from the version folders, every record shown unreadable with the file
named; every command that would write it refuses before any work, with one line naming the fix,
and leaves the repository as it was, byte for byte. Local repositories and s3:// (moto)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tritonstack.cli import main
from tritonstack.export.repository import build_config, replace_file, write_version
from tritonstack.export.state import STATE_NAME, record_export
from tritonstack.formats import Format
from tritonstack.spec import ModelSpec, TensorSpec

SPOILED = {"truncated": b'{"format": 1, "models": {"a_onnx": {"1": {"status": "produ', "a list": b"[1, 2]\n"}


def _repository(root: Path, state: bytes) -> Path:
    """a_onnx v1 (production), v2, v3, recorded; then tritonstack.json replaced by `state`."""
    repo, artifact = root / "repo", root / "model.onnx"
    artifact.write_bytes(b"weights")
    spec = ModelSpec("a_onnx", (TensorSpec("x", "float32", (4,)),), (TensorSpec("y", "float32", (1,)),))
    for version in range(1, 4):
        version_dir = write_version(repo, "a_onnx", build_config(spec, Format.ONNX), {"model.onnx": artifact})
        record_export(version_dir, {"status": "production" if version == 1 else None})
    (repo / STATE_NAME).write_bytes(state)
    return repo


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("state", SPOILED.values(), ids=SPOILED.keys())
def test_models_lists_every_version_with_its_record_unreadable(
    tmp_path: Path, state: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repository(tmp_path, state)
    before = _tree(repo)
    assert main(["models", "--repo", str(repo), "--json"]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [(r["version"], r["readable"]) for r in rows] == [(1, False), (2, False), (3, False)]
    for row in rows:
        assert row["notes"].startswith(f"unreadable metadata: {repo / STATE_NAME} "), row["notes"]
    assert err.count("\n") == 1 and f"{repo / STATE_NAME} " in err and "restore it from a backup" in err
    assert main(["models", "prune", "a_onnx", "--keep", "1", "--repo", str(repo)]) == 0  # dry run
    assert "would remove" not in capsys.readouterr().out  # statuses unknown: none may go
    assert _tree(repo) == before


WRITERS = {
    "promote": ["models", "promote", "a_onnx", "2", "--status", "staging"],
    "prune": ["models", "prune", "a_onnx", "--keep", "1", "--yes"],
}


@pytest.mark.parametrize("command", WRITERS.values(), ids=WRITERS.keys())
def test_writers_refuse_with_one_line_and_change_nothing(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repository(tmp_path, SPOILED["truncated"])
    before = _tree(repo)
    assert main([*command, "--repo", str(repo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{repo / STATE_NAME} is not valid JSON" in err and "nothing was changed" in err
    assert f"mv {repo / STATE_NAME} {repo / STATE_NAME}.corrupt" in err
    assert _tree(repo) == before  # before: it stopped too, but its line named no way out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "dlrm.pt"
    assert main(["train", "--arch", "dlrm", "--preset", "tiny", "--steps", "1", "--out", str(path)]) == 0
    return path


@pytest.mark.parametrize("all_of_them", [False, True], ids=["export", "export-all"])
def test_export_refuses_before_exporting(
    tmp_path: Path, checkpoint: Path, all_of_them: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the export published a version, then stopped at recording it (a version without
    its record)."""
    repo = _repository(tmp_path, SPOILED["a list"])
    before = _tree(repo)
    source = str(checkpoint.parent) if all_of_them else str(checkpoint)
    command = ["export-all" if all_of_them else "export", source, "--repo", str(repo), "--formats", "onnx"]
    capsys.readouterr()
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{repo / STATE_NAME} holds a JSON list" in err, err
    assert _tree(repo) == before


def test_bench_refuses_before_measuring(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench records its latencies in the file, so it refuses before any work. Before, it went to
    work (loaded the models, served and measured them) and stopped only when recording, with a
    line naming no fix; on these stand-in artifacts it fails at loading them (exit 1)."""
    repo = _repository(tmp_path, SPOILED["truncated"])
    out = tmp_path / "bench-out"
    assert main(["bench", "--repo", str(repo), "--out", str(out), "--batch-sizes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{repo / STATE_NAME} is not valid JSON" in err, err
    assert "restore it from a backup" in err
    assert not out.exists()


def test_the_state_file_reaches_the_disk_before_it_replaces_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash of the machine must leave the old file or the new one: the new data is synced before
    the rename and the directory after it (before: neither, so a crash could leave an empty file)."""
    target = tmp_path / STATE_NAME
    target.write_bytes(b"{}")
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("sync directory" if os.path.isdir(f"/proc/self/fd/{fd}") else "sync file")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    replace_file(target, b'{"format": 1}\n')
    assert events == ["sync file", "replace", "sync directory"]
    assert target.read_bytes() == b'{"format": 1}\n'


def test_on_the_store_listing_goes_on_and_writers_refuse(
    s3_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same on s3:// (a local mirror underneath): the lines name the store's file, not the
    mirror's; a refused promote publishes nothing and releases its lock."""
    import boto3

    from tests.s3_store import BUCKET, objects

    local = _repository(tmp_path, SPOILED["truncated"])
    url, prefix = f"s3://{BUCKET}/spoiled", "spoiled/"
    for path in local.rglob("*"):
        if path.is_file():
            boto3.client("s3").upload_file(str(path), BUCKET, prefix + path.relative_to(local).as_posix())
    before = objects(BUCKET, prefix)
    assert main(["models", "--repo", url, "--json"]) == 0
    out, err = capsys.readouterr()
    notes = [r["notes"] for r in json.loads(out)]
    assert len(notes) == 3 and all(
        n.startswith(f"unreadable metadata: {url}/{STATE_NAME} is not valid JSON (") for n in notes
    )
    assert err.count("\n") == 1 and f"{url}/{STATE_NAME} is not valid JSON" in err, err
    assert main(["models", "promote", "a_onnx", "2", "--status", "staging", "--repo", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{url}/{STATE_NAME} is not valid JSON" in err, err
    assert (
        f"(aws s3 mv {url}/{STATE_NAME} {url}/{STATE_NAME}.corrupt)" in err and "tritonstack-s3-" not in err
    )
    assert objects(BUCKET, prefix) == before  # the lock released, nothing published
