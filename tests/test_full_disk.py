"""Commands on a disk that fills up (a real, small tmpfs). The bench's results.json is written
atomically and first, so a full disk never leaves half of it; when it cannot be written at all, a
copy goes to the temporary folder and one line says where, so a long run is never lost. A
checkpoint that does not fit is one line naming it, with nothing left behind. (The export's
staging on a full disk: tests/test_repository.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tritonstack.cli import main

RESULTS = Path(__file__).parents[1] / "benchmarks/results/h200-small-dlrm/results.json"  # 48 KB


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 128 KiB file system of its own (tmpfs): room for two copies of RESULTS and a little more."""
    if shutil.which("mount") is None:
        pytest.skip("cannot mount a small tmpfs here: no mount command")
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_results_that_cannot_be_written_are_kept_elsewhere(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = small_disk / "run"
    out.mkdir()
    shutil.copy(RESULTS, out / "results.json")
    (small_disk / "filler").write_bytes(b"\0" * 40_000)  # the new copy no longer fits beside the old
    kept_in = tmp_path / "tmp"
    kept_in.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(kept_in))
    assert main(["bench", "report", str(out / "results.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    (kept,) = kept_in.glob("tritonstack-results-*.json")
    assert err == (
        f"tritonstack bench: error: cannot write {out / 'results.json'} (No space left on device): the "
        f"measurements are kept in {kept}; once it can be written, copy it to {out / 'results.json'} and run "
        f"`tritonstack bench report {out / 'results.json'}`\n"
    )
    assert json.loads(kept.read_text()) == json.loads(RESULTS.read_text())
    assert (out / "results.json").read_bytes() == RESULTS.read_bytes()  # the old file, whole
    assert [p.name for p in out.iterdir()] == ["results.json"]  # no temporary left behind


def test_results_written_before_the_disk_fills_are_whole(
    small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = small_disk / "run"
    out.mkdir()
    shutil.copy(RESULTS, out / "results.json")
    # Room for the new results.json beside the old, not for the plots after it.
    assert main(["bench", "report", str(out / "results.json")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"tritonstack bench: error: {out / 'results.json'} is written, the files made from it are not (No "
        f"space left on device): free some space and run `tritonstack bench report {out / 'results.json'}`\n"
    )
    assert json.loads((out / "results.json").read_text()) == json.loads(RESULTS.read_text())


def test_a_checkpoint_that_does_not_fit_is_one_line(
    small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = small_disk / "two_tower.pt"
    assert main(["train", "--arch", "two_tower", "--steps", "2", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"tritonstack train: error: {out}: No space left on device\n"
    assert list(small_disk.iterdir()) == []  # no temporary file left
