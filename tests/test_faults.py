"""Issue 17's probes kept as regressions, on the real Triton and the real `tritonstack serve`:

- D3: a broken model is named, one line each, before Triton starts; an export killed before it
  finishes leaves no config without a version;
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.reference_models import FRAGILE, write_fragile_model
from tritonstack.cli import main
from tritonstack.serve.repository_check import model_problem

X = np.ones((1, 4), np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    write_fragile_model(root / "repo", root)
    return root / "repo"


# -- D3: broken models named, at once ------------------------------------------------------------


def _broken_repository(root: Path) -> Path:
    """The fragile model, plus one model with an invalid config, one with a config and no
    version, and one with a version and no config."""
    repo = root / "repo"
    write_fragile_model(repo, root)
    for name in ("bad_config", "no_version", "no_config"):
        (repo / name).mkdir()
    (repo / "bad_config" / "config.pbtxt").write_text(
        'name: "bad_config"\nplatform: "pytorch_libtorch"\nbogus: 1\n'
    )
    (repo / "bad_config" / "1").mkdir()
    (repo / "no_version" / "config.pbtxt").write_text((repo / FRAGILE.name / "config.pbtxt").read_text())
    (repo / "no_config" / "1").mkdir()
    return repo


@pytest.mark.timeout(150)
def test_serve_names_every_broken_model_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _broken_repository(tmp_path)
    started = time.monotonic()
    assert main(["serve", "--repo", str(repo)]) == 2
    assert time.monotonic() - started < 5, "Triton was started (or waited on) before the check"
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("tritonstack serve: error: 3 models in ")
    assert lines[1].startswith("  bad_config: ") and "is not a valid Triton model config" in lines[1]
    assert 'no field named "bogus"' in lines[1]
    assert lines[2].startswith("  no_config: no config.pbtxt (an interrupted export?)")
    assert lines[3].startswith("  no_version: config.pbtxt but no version directory")
    assert len(lines) == 4


def test_a_version_policy_selecting_no_existing_version_is_named(repo: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / FRAGILE.name
    shutil.copytree(repo / FRAGILE.name, model_dir)
    assert model_problem(model_dir) is None
    config = model_dir / "config.pbtxt"
    config.write_text(config.read_text() + "version_policy { specific { versions: [3, 4] } }\n")
    assert model_problem(model_dir) == (
        f"{config} serves versions 3, 4 (version_policy) but the version directories are 1: "
        "promote an existing version or re-export"
    )


def test_a_killed_export_leaves_no_config_without_a_version(tmp_path: Path, capsys) -> None:
    """The export of a new model is killed (SIGKILL: no clean-up runs) as it publishes its
    version; `serve` then names the leftover at once."""
    repo = tmp_path / "repo"
    script = f"""
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from tests.reference_models import write_fragile_model
from tritonstack.export import repository
repository._publish = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
write_fragile_model(Path({str(repo)!r}), Path({str(tmp_path)!r}))
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    model_dir = repo / FRAGILE.name
    versions = [p for p in model_dir.iterdir() if p.name.isdigit()]
    assert versions or not (model_dir / "config.pbtxt").exists(), "a config without a version"
    assert main(["serve", "--repo", str(repo)]) == 2
    assert f"  {FRAGILE.name}: no config.pbtxt (an interrupted export?)" in capsys.readouterr().err
