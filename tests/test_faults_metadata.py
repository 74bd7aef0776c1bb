"""Issue #17, D8: a bad record of one version (an old `metadata.json` that is not a JSON object
or not JSON, a `tritonstack.json` entry that is not an object) concerns that version alone:
`models` lists it with the reason, `prune` keeps it, `export-all` goes on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tritonstack.cli import main
from tritonstack.export.repository import build_config, write_version
from tritonstack.export.state import STATE_NAME, record_export
from tritonstack.formats import Format
from tritonstack.spec import ModelSpec, TensorSpec


def _legacy(text: str) -> Callable[[Path], None]:
    def spoil(repo: Path) -> None:
        (repo / "a_onnx" / "1" / "metadata.json").write_text(text)

    return spoil


def _state_entry(repo: Path) -> None:
    state = json.loads((repo / STATE_NAME).read_text())
    state["models"]["a_onnx"]["1"] = [1, 2]
    (repo / STATE_NAME).write_text(json.dumps(state))


BREAKAGES = {"legacy list": _legacy("[1, 2]"), "legacy not JSON": _legacy("{"), "state entry": _state_entry}


def _repository(root: Path, spoil: Callable[[Path], None]) -> Path:
    """a_onnx v1, v2 and b_onnx v1, each recorded; then a_onnx v1's record spoiled."""
    repo, artifact = root / "repo", root / "model.onnx"
    artifact.write_bytes(b"weights")
    for name, versions in (("a_onnx", 2), ("b_onnx", 1)):
        spec = ModelSpec(name, (TensorSpec("x", "float32", (4,)),), (TensorSpec("y", "float32", (1,)),))
        for _ in range(versions):
            version_dir = write_version(repo, name, build_config(spec, Format.ONNX), {"model.onnx": artifact})
            record_export(version_dir, {"status": None, "source": {"sha256": "0" * 64}})
    spoil(repo)
    return repo


@pytest.mark.parametrize("spoil", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_models_and_prune_go_on_past_one_bad_record(
    tmp_path: Path, spoil: Callable[[Path], None], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repository(tmp_path, spoil)
    assert main(["models", "--repo", str(repo), "--json"]) == 0
    rows = {(r["model"], r["version"]): r for r in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == [("a_onnx", 1), ("a_onnx", 2), ("b_onnx", 1)]
    assert rows["a_onnx", 1]["notes"].startswith("unreadable metadata: ")
    assert "\n" not in rows["a_onnx", 1]["notes"]
    assert not any("unreadable" in rows[key]["notes"] for key in (("a_onnx", 2), ("b_onnx", 1)))

    assert main(["models", "prune", "a_onnx", "--keep", "1", "--yes", "--repo", str(repo)]) == 0
    assert (repo / "a_onnx" / "1").is_dir()  # its status is unknown: it may be production


@pytest.mark.parametrize("spoil", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_export_all_goes_on_past_one_bad_record(
    tmp_path: Path, spoil: Callable[[Path], None], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repository(tmp_path, spoil)
    checkpoints = tmp_path / "checkpoints"
    train = [
        "train",
        "--arch",
        "dlrm",
        "--preset",
        "tiny",
        "--steps",
        "1",
        "--out",
        str(checkpoints / "dlrm.pt"),
    ]
    assert main(train) == 0
    capsys.readouterr()
    assert main(["export-all", str(checkpoints), "--repo", str(repo), "--formats", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "1 converted, 0 skipped, 0 failed" in out, out
    assert (repo / "dlrm_onnx" / "1").is_dir()
