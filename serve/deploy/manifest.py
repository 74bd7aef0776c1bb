"""Manifests as plain dicts, written as YAML by PyYAML: one file per kind of object."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tritonstack.errors import UsageError
from tritonstack.serve.deploy.options import DeployOptions

Manifest = dict[str, Any]
_NO_FOLDING = 1 << 16  # long arguments and queries stay on one line


def object_meta(options: DeployOptions, name: str, **extra: Any) -> Manifest:
    """`metadata` with the deployment's labels, and its namespace when one was given (otherwise
    `kubectl -n` decides)."""
    meta: Manifest = {"name": name}
    if options.namespace:
        meta["namespace"] = options.namespace
    meta["labels"] = dict(options.labels)
    meta.update(extra)
    return meta


def write_manifests(out: Path, files: Mapping[str, Sequence[Manifest]]) -> list[Path]:
    """Write each file's documents into `out` (created if needed); returns the paths written."""
    try:
        import yaml
    except ImportError as exc:
        raise UsageError("deploy needs PyYAML: pip install 'tritonstack[deploy]'") from exc
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: give a directory for the manifests")
    others = sorted(p.name for p in out.glob("*.y*ml") if p.name not in files) if out.is_dir() else []
    if others:
        raise UsageError(
            f"--out {out} holds other manifests ({', '.join(others)}) that `kubectl apply -f` would apply "
            "too: give a new directory"
        )
    out.mkdir(parents=True, exist_ok=True)

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # a dict used twice is written twice, not as an anchor and an alias

    paths = []
    for name, documents in files.items():
        path = out / name
        path.write_text(yaml.dump_all(documents, Dumper=Dumper, sort_keys=False, width=_NO_FOLDING))
        paths.append(path)
    return paths
