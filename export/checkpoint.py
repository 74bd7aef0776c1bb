"""Reading checkpoints safely and rebuilding the model they belong to.

Nothing here executes pickled code: `.pt`/`.pth`/`.bin` files go through
`torch.load(weights_only=True)`, `.safetensors` through safetensors. A training checkpoint
(`model_state_dict`, `optimizer_state_dict`, `epoch`, `loss`, `metrics`, `config`) carries its
architecture; a bare state dict needs the architecture from the caller.

A path may also be a training output folder (Accelerate / HF Trainer `checkpoint-N/`: only the
weights file is read, `optimizer.bin`, `scheduler.bin` and `random_states_*.pkl` are never
opened), a symlink, or a small `latest` pointer file naming the checkpoint beside it.
"""

from __future__ import annotations

from tritonstack.export import _extra  # noqa: F401  (first: the 'export' extra, or one error naming it)

# isort: split

import json
import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tritonstack.errors import CheckpointError, InvalidArgument, UsageError, first_line
from tritonstack.export.custom import CustomArch
from tritonstack.spec import DEFAULT_MAX_BATCH_SIZE, ModelSpec

# Wrappers that prefix every key: DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# torch.save writes a zip archive; before torch 1.6 it wrote a bare pickle (protocol 2+).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"
# A pointer file (`latest`) is one short line of text naming the checkpoint.
_POINTER_MAX_BYTES = 1024
_STEP_FOLDER = re.compile(r"checkpoint-(\d+)")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """How to rebuild the module when the checkpoint does not say: a built-in architecture with
    a preset or config, or a custom `module:callable`."""

    arch: str | None = None
    preset: str | None = None
    config: Mapping[str, Any] | None = None
    custom: CustomArch | None = None
    allow_partial: bool = False  # load the keys that fit, warn about the rest


@dataclass
class LoadedModel:
    """A module in eval mode with its weights loaded, and everything known about where it came from."""

    module: nn.Module
    spec: ModelSpec
    arch: str
    config: dict[str, Any]
    source: Path
    info: dict[str, Any] = field(default_factory=dict)
    model_source: ModelSource = ModelSource()  # as the caller gave it, for the reproducing command


def load_model(
    path: Path,
    source: ModelSource = ModelSource(),
    name: str | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> LoadedModel:
    """Read `path`, rebuild its model and load the weights: strictly (every key must match)
    unless `source.allow_partial`, which loads what fits and records the rest in `info`."""
    if max_batch_size < 1:
        raise InvalidArgument(f"max_batch_size (--max-batch-size) must be at least 1, got {max_batch_size}")
    path = resolve_checkpoint(path)
    state, meta = read_checkpoint(path)
    module, spec, arch, config = _build(source, meta.get("config"), path, name, max_batch_size)
    info: dict[str, Any] = {k: meta[k] for k in ("epoch", "step", "loss", "metrics") if k in meta}
    step = _STEP_FOLDER.fullmatch(path.parent.name)
    if "step" not in info and step:
        info["step"] = int(step.group(1))
    if source.allow_partial:
        not_loaded = load_state_partial(module, state)
        if not_loaded:
            info["not_loaded"] = not_loaded
            log.warning("warning: %s loaded partially: %s", path, "; ".join(not_loaded))
    else:
        load_state_strict(module, state, path)
    return LoadedModel(module.eval(), spec, arch, config, path, info, source)


def resolve_checkpoint(path: Path, _seen: frozenset[Path] = frozenset()) -> Path:
    """The weights file behind `path`: symlinks followed, a `latest` pointer file read, a
    training output folder's model file picked. A symlink loop or a pointer chain that comes
    back to itself is refused."""
    try:
        path = Path(path).resolve(strict=False)
    except RuntimeError as exc:  # Python 3.10-3.12 raise it for a symlink loop
        raise CheckpointError(f"{path} is a symlink loop: point it at a checkpoint") from exc
    if path.is_symlink():  # Python 3.13 leaves a loop unresolved
        raise CheckpointError(f"{path} is a symlink loop: point it at a checkpoint")
    if path.is_dir():
        return _weights_in_folder(path)
    if path.is_file() and not path.suffix and path.stat().st_size <= _POINTER_MAX_BYTES:
        with path.open("rb") as f:
            head = f.read(4)
        if not head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
            target = path.parent / path.read_text(errors="replace").strip()
            if path in _seen:
                raise CheckpointError(f"{path} points back to itself: make it name a checkpoint")
            if not target.exists():
                raise CheckpointError(f"{path} points to {target}, which does not exist")
            return resolve_checkpoint(target, _seen | {path})  # a pointer to itself fails here next
    return path


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict (wrapper prefixes stripped) and the checkpoint's other entries."""
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} — check the path")
    if path.suffix == ".safetensors":
        state, meta = _read_safetensors(path)
    else:
        state, meta = _read_torch(path)
    return strip_wrapper_prefixes(state), meta


def strip_wrapper_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load weights, naming every missing, unexpected and mis-shaped key on failure."""
    parts = _mismatches(module, state)
    if parts:
        raise CheckpointError(
            f"{path} does not fit the {type(module).__name__} it is loaded into: {'; '.join(parts)} "
            "— check --arch/--preset/--config match the checkpoint"
        )
    module.load_state_dict(state, strict=True)


def load_state_partial(module: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Load every key whose name and shape fit; the rest keep their initial values. Returns the
    mismatches, one description per kind (empty when everything fit)."""
    expected = module.state_dict()
    fitting = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    module.load_state_dict(fitting, strict=False)
    return _mismatches(module, state)


def _mismatches(module: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    return [
        f"{label} ({len(keys)}): {_abbreviate(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape", shapes))
        if keys
    ]


def _abbreviate(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … {len(keys) - limit} more" if len(keys) > limit else "")


def _weights_in_folder(folder: Path) -> Path:
    for candidate in ("model.safetensors", "pytorch_model.bin", "model.pt"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise CheckpointError(f"{folder} holds no model.safetensors, pytorch_model.bin or model.pt")


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    with path.open("rb") as f:
        head = f.read(4)
    if not head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (empty, truncated or another format)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler names the global it refused; any other refusal is a bad stream.
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None:
            raise CheckpointError(f"{path} is truncated or corrupt: not a readable pickle stream") from exc
        raise CheckpointError(
            f"{path} needs arbitrary unpickling ({found.group(1)}), which could run code; tritonstack only "
            "loads weights_only checkpoints — if you trust the file, re-save its state dict with "
            "torch.save or as .safetensors"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt: {first_line(exc)}") from exc
    return _split_checkpoint(obj, path)


def _split_checkpoint(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        meta = {k: v for k, v in obj.items() if k not in ("model_state_dict", "optimizer_state_dict")}
        return dict(obj["model_state_dict"]), meta
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), {}
    raise CheckpointError(f"{path} is neither a state dict nor a training checkpoint with 'model_state_dict'")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {first_line(exc)}") from exc
    config_file = path.with_name("config.json")
    if not config_file.is_file():
        return state, {}
    try:
        return state, {"config": json.loads(config_file.read_text())}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_file} beside {path.name} is not JSON: {first_line(exc)}") from exc


def _build(
    source: ModelSource, saved_config: object, path: Path, name: str | None, max_batch_size: int
) -> tuple[nn.Module, ModelSpec, str, dict[str, Any]]:
    if source.custom is not None:
        module, spec = source.custom.build(dict(source.config or {}), name, max_batch_size)
        return module, spec, source.custom.target, dict(source.config or {})
    from tritonstack import recsys

    arch_name, params, saved = _builtin_config(source, saved_config, path)
    arch = recsys.get_architecture(arch_name)
    try:
        config = arch.config(params, source.preset)
    except InvalidArgument as exc:
        if not saved:  # --config: the user's to fix
            raise
        raise CheckpointError(
            f"{path}: its saved {arch_name} config is invalid ({first_line(exc)}): pass --preset or --config"
        ) from exc
    spec = arch.spec(config, model_name=name or arch_name, max_batch_size=max_batch_size)
    return arch.build(config), spec, arch_name, config.to_dict()


def _builtin_config(
    source: ModelSource, saved: object, path: Path
) -> tuple[str, Mapping[str, Any] | None, bool]:
    """The architecture name, the config fields (None: the preset) and whether those fields are
    the checkpoint's own: the command line wins over what the checkpoint says."""
    if isinstance(saved, Mapping) and "arch" in saved:
        arch = source.arch or str(saved["arch"])
        if source.arch and source.arch != saved["arch"]:
            raise UsageError(f"{path} was trained as {saved['arch']!r}, not {source.arch!r}: drop --arch")
        if source.config is not None or source.preset is not None:
            return arch, source.config, False
        if saved.get("params") is None:
            raise CheckpointError(
                f"{path} names its architecture but not its config: pass --preset or --config"
            )
        return arch, saved["params"], True
    if source.arch is None:
        raise UsageError(
            f"{path} does not say which architecture it holds: pass --arch (and --preset or --config)"
        )
    if source.config is None and source.preset is None:
        raise UsageError(f"{path} is a bare state dict: pass --preset or --config for {source.arch!r}")
    return source.arch, source.config, False
