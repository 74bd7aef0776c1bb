"""Checkpoint loading: every accepted form, and a one-line error for every bad one."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.custom_models import make_scorer
from tritonstack.errors import CheckpointError, UsageError
from tritonstack.export.checkpoint import ModelSource, load_model, read_checkpoint
from tritonstack.export.custom import CustomArch, parse_input
from tritonstack.spec import TensorSpec

SCORER = CustomArch(
    "tests.custom_models:make_scorer", (parse_input("ids:int64:3:50"), parse_input("dense:float32:4")), ("p",)
)


class _Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return make_scorer().state_dict()


def test_bare_state_dict_with_custom_arch(tmp_path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "w.pth"
    torch.save(state_dict, path)
    loaded = load_model(path, ModelSource(custom=SCORER))
    assert loaded.spec.input_names == ["ids", "dense"]
    assert loaded.spec.outputs[0].shape == (1,)
    assert torch.equal(loaded.module.state_dict()["emb.weight"], state_dict["emb.weight"])


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_are_stripped(
    tmp_path: Path, state_dict: dict[str, torch.Tensor], prefix: str
) -> None:
    path = tmp_path / "w.pt"
    torch.save({prefix + k: v for k, v in state_dict.items()}, path)
    state, _ = read_checkpoint(path)
    assert set(state) == set(state_dict)


def test_safetensors(tmp_path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "model.safetensors"
    save_file(state_dict, str(path))
    loaded = load_model(tmp_path, ModelSource(custom=SCORER))  # a folder holding model.safetensors
    assert torch.equal(loaded.module.state_dict()["lin.bias"], state_dict["lin.bias"])


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": {"w": _Payload(marker)}}, path)
    with pytest.raises(CheckpointError, match="arbitrary unpickling .*system"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a PyTorch checkpoint"),
        (b"GIF89a" + bytes(range(256)) * 16, "not a PyTorch checkpoint"),
        (b"\x80\x02" + bytes(range(256)) * 16, "truncated or corrupt"),  # pickle header, then junk
    ],
)
def test_junk_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


def test_truncated_checkpoint(tmp_path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "w.pt"
    torch.save(state_dict, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pt")


def test_key_mismatch_names_the_keys(tmp_path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    state = dict(state_dict)
    state["extra.weight"] = state.pop("lin.weight")
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(
        CheckpointError, match=r"missing keys \(1\): lin.weight; unexpected keys \(1\): extra.weight"
    ):
        load_model(path, ModelSource(custom=SCORER))


def test_shape_mismatch_is_named(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(make_scorer(width=16).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"shape .*emb.weight \(50, 16\) vs \(50, 8\)"):
        load_model(path, ModelSource(custom=SCORER))


def test_bare_state_dict_needs_an_architecture(tmp_path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "w.pt"
    torch.save(state_dict, path)
    with pytest.raises(UsageError, match="pass --arch"):
        load_model(path)


def test_self_describing_custom_model(tmp_path: Path) -> None:
    from tests.custom_models import make_self_describing

    path = tmp_path / "w.pt"
    torch.save(make_self_describing().state_dict(), path)
    loaded = load_model(path, ModelSource(custom=CustomArch("tests.custom_models:make_self_describing")))
    assert loaded.spec.output_names == ["score"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.custom_models", "package.module:callable"),
        ("tests.nowhere:make", "cannot import"),
        ("tests.custom_models:not_a_module", "not a torch.nn.Module"),
    ],
)
def test_bad_custom_targets(
    tmp_path: Path, state_dict: dict[str, torch.Tensor], target: str, message: str
) -> None:
    path = tmp_path / "w.pt"
    torch.save(state_dict, path)
    with pytest.raises(UsageError, match=message):
        load_model(path, ModelSource(custom=CustomArch(target, SCORER.inputs, SCORER.outputs)))


def _custom_load(path: Path, arch: CustomArch, config: dict[str, object] | None = None) -> None:
    load_model(path, ModelSource(config=config, custom=arch))


def test_factory_errors_are_shown_as_themselves_and_chained(
    tmp_path: Path, state_dict: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The factory's own ImportError or TypeError is named as such, with the original as the
    cause, not blamed on --config or on PYTHONPATH."""
    path = tmp_path / "w.pt"
    torch.save(state_dict, path)
    (tmp_path / "needs_a_dependency.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match="importing needs_a_dependency raised ModuleNotFoundError") as err:
        _custom_load(path, replace(SCORER, target="needs_a_dependency:make"))
    assert "PYTHONPATH" not in str(err.value)
    assert isinstance(err.value.__cause__, ModuleNotFoundError)
    assert err.value.__cause__.name == "a_dependency_that_is_not_installed"

    with pytest.raises(UsageError, match="the factory raised TypeError") as err:
        _custom_load(path, replace(SCORER, target="tests.custom_models:make_broken_scorer"))
    assert "--config" not in str(err.value) and isinstance(err.value.__cause__, TypeError)

    with pytest.raises(UsageError, match="--config does not fit its arguments.*'wdth'") as err:
        _custom_load(path, SCORER, {"wdth": 3})
    assert isinstance(err.value.__cause__, TypeError)


@pytest.mark.parametrize(
    ("target", "inputs", "outputs", "message"),
    [
        (
            "no_such_factory",
            SCORER.inputs,
            SCORER.outputs,
            "module tests.custom_models has no 'no_such_factory'",
        ),
        ("NOT_CALLABLE", SCORER.inputs, SCORER.outputs, "NOT_CALLABLE is a int, not a callable"),
        ("make_scorer", SCORER.inputs, ("p q",), "'p q' must be a Python identifier"),
        ("make_scorer", SCORER.inputs, ("ids",), "tensor names must be unique"),
        (
            "make_scorer",
            (parse_input("ids:int64:3:50"), parse_input("dense:float32:5")),
            SCORER.outputs,
            "a forward pass on random inputs shaped as --input raised RuntimeError",
        ),
    ],
)
def test_custom_model_mistakes_are_usage_errors(
    tmp_path: Path,
    state_dict: dict[str, torch.Tensor],
    target: str,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[str, ...],
    message: str,
) -> None:
    path = tmp_path / "w.pt"
    torch.save(state_dict, path)
    with pytest.raises(UsageError, match=message):
        _custom_load(path, CustomArch(f"tests.custom_models:{target}", inputs, outputs))


def test_max_batch_size_is_checked_before_the_checkpoint_is_read(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="max_batch_size .* must be at least 1, got 0"):
        load_model(tmp_path / "not-even-there.pt", max_batch_size=0)
