"""Precomputed Two-Tower embeddings for retrieval: one row per user id and per item id.

Row `k` of `user_embeddings.npy` is the user tower applied to the feature row `[k, 0, ..., 0]`
(field 0 is the id, every other field set to category 0), and likewise for items. The served
`two_tower` score of that user row and item row is exactly the dot product of the two embeddings.
The files are published inside the version directory they were computed from (Triton ignores
files it does not load), with `embeddings.json` describing them.
"""

from __future__ import annotations

from tritonstack.export import _extra  # noqa: F401  (first: the 'export' extra, or one error naming it)

# isort: split

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tritonstack.errors import UsageError
from tritonstack.export.checkpoint import LoadedModel
from tritonstack.export.metadata import file_sha256

MANIFEST_NAME = "embeddings.json"
_CHUNK = 4096
_TOWERS = {"user": "user_features", "item": "item_features"}


def write_embeddings(loaded: LoadedModel, folder: Path) -> dict[str, Path]:
    """Write both tables and the manifest into `folder`; returns file name -> path."""
    if not all(hasattr(loaded.module, f"{tower}_embedding") for tower in _TOWERS):
        raise UsageError(f"--export-embeddings needs a two-tower model, not {loaded.arch}")
    manifest: dict[str, Any] = {"checkpoint_sha256": file_sha256(loaded.source), "arch": loaded.arch}
    files = {}
    for tower, input_name in _TOWERS.items():
        spec = next(t for t in loaded.spec.inputs if t.name == input_name)
        ids = int(spec.high[0] if isinstance(spec.high, tuple) else spec.high or 0)
        table = _embed(loaded, tower, ids, spec.shape[0])
        name = f"{tower}_embeddings.npy"
        np.save(folder / name, table)
        files[name] = folder / name
        manifest[tower] = {
            "file": name,
            "shape": list(table.shape),
            "dtype": str(table.dtype),
            "rows": f"row k = {input_name} [k, 0, ..., 0]: field 0 is the id, other fields 0",
        }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    files[MANIFEST_NAME] = folder / MANIFEST_NAME
    return files


@torch.no_grad()
def _embed(loaded: LoadedModel, tower: str, ids: int, fields: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    embed = getattr(loaded.module, f"{tower}_embedding")
    chunks = []
    for start in range(0, ids, _CHUNK):
        rows = torch.zeros((min(_CHUNK, ids - start), fields), dtype=torch.int64)
        rows[:, 0] = torch.arange(start, start + len(rows))
        chunks.append(embed(rows).numpy().astype(np.float32))
    return np.concatenate(chunks)
