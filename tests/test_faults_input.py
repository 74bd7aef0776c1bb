"""Issue #17, D5 leftovers: a checkpoint path that never reaches a file (a symlink loop, a
`latest` pointer naming itself or a chain of pointers back to the first) is one line, exit 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tritonstack.cli import main


def _loop(tmp_path: Path) -> Path:
    os.symlink("loop", tmp_path / "loop")
    return tmp_path / "loop"


def _self_pointer(tmp_path: Path) -> Path:
    (tmp_path / "latest").write_text("latest\n")
    return tmp_path / "latest"


def _pointer_cycle(tmp_path: Path) -> Path:
    (tmp_path / "latest").write_text("previous\n")
    (tmp_path / "previous").write_text("latest\n")
    return tmp_path / "latest"


@pytest.mark.parametrize(
    ("make", "message"),
    [(_loop, "is a symlink loop"), (_self_pointer, "points back to itself"), (_pointer_cycle, "points back")],
)
def test_a_checkpoint_that_leads_back_to_itself_is_one_line(
    tmp_path: Path, make, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, repo = make(tmp_path), tmp_path / "repo"
    assert main(["export", str(checkpoint), "--repo", str(repo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not repo.exists()
