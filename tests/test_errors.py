"""The error policy: an error raised while handling another names it as its cause (`raise ... from
exc`), so `--debug` shows the whole chain; `from None` would drop it. The CLI prints only the
one-line message either way."""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import tritonstack
from tritonstack.errors import ExportError, UsageError
from tritonstack.export.verify import check_model_outputs
from tritonstack.releases import triton_release
from tritonstack.spec import ModelSpec, TensorSpec
from tritonstack.storage.location import S3Endpoint

ROOT = Path(tritonstack.__file__).parent.parent


def _project_sources() -> Iterator[Path]:
    """Every Python file of the checkout, once: hidden folders (.venv, .git, caches) left out and
    links not followed (tritonstack/<part> leads back to the top-level folders)."""
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d != "__pycache__"]
        yield from (Path(folder) / f for f in files if f.endswith(".py"))


def _causes_dropped(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line` of each `raise ... from None` in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(root)}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Raise) and isinstance(node.cause, ast.Constant) and node.cause.value is None
    ]


def test_no_project_module_drops_a_cause() -> None:
    sources = list(_project_sources())
    assert ROOT / "export" / "verify.py" in sources and ROOT / "tests" / "test_errors.py" in sources
    dropped = [place for path in sources for place in _causes_dropped(path)]
    assert dropped == [], f"`raise ... from None` drops the cause --debug shows; chain it: {dropped}"


def test_the_check_finds_a_dropped_cause(tmp_path: Path) -> None:
    source = tmp_path / "dropped.py"
    source.write_text("try:\n    pass\nexcept KeyError as exc:\n    raise ValueError(1) from exc\n"
                      "except OSError:\n    raise ValueError(2) from (\n        None\n    )\n")  # fmt: skip
    assert _causes_dropped(source, tmp_path) == ["dropped.py:6"]


class _DictOutput(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": x}


def _dict_output() -> None:
    spec = ModelSpec("m", (TensorSpec("x", "float32", (1,)),), (TensorSpec("y", "float32", (1,)),))
    check_model_outputs(_DictOutput(), spec)


@pytest.mark.parametrize(
    ("fail", "error", "cause"),
    [
        (lambda: triton_release("99.99"), UsageError, KeyError),
        (lambda: S3Endpoint.parse("http://minio:99999"), UsageError, ValueError),
        (_dict_output, ExportError, TypeError),
    ],
    ids=["unknown release", "bad endpoint port", "forward returns a dict"],
)
def test_user_errors_keep_their_cause(
    fail: Callable[[], object], error: type[Exception], cause: type[Exception]
) -> None:
    with pytest.raises(error) as raised:
        fail()
    assert isinstance(raised.value.__cause__, cause)
