"""Which backend served a model, as the server itself tells it.

Triton fills a loaded model's `backend` (from `platform` when the config gives only that) and,
for a Python-based backend (a `<backend>/model.py` in its backend directory instead of
`libtriton_<backend>.so`), sets `runtime` to `model.py`; for a native C++ backend `runtime` stays
as the config wrote it, normally empty. The model-config RPC returns both, so this works against
any server. Whose Python-based backend it is the server does not say: for the embedded server it
is ours (tritonstack assembles its backend directory, `serve/backend_dir.py`); for a server at
`--url` it is left unknown.
"""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import model_config_pb2 as pb

PYTHON_BASED_RUNTIME = "model.py"  # Triton core's name for a Python-based backend's library


def served_by(config: pb.ModelConfig, embedded: bool) -> dict[str, Any]:
    """`kind` (`native`, `python-based` or `python`), the backend's name, platform and runtime
    as the server reports them, whether the backend is tritonstack's own (None: unknown), a short
    `label` for tables and a `description`."""
    backend = config.backend
    if backend == "python":
        kind, ours, label = "python", None, "Python backend"
        description = "Triton's Python backend running the model's own model.py"
    elif config.runtime == PYTHON_BASED_RUNTIME:
        kind, ours = "python-based", True if embedded else None
        label = "ours (Python-based)" if embedded else "Python-based"
        description = (
            f"{backend}/model.py run by Triton's Python backend, standing in for the native {backend} "
            + (
                "backend: tritonstack's, from the embedded server's backend directory"
                if embedded
                else "backend: the server does not say whose"
            )
        )
    else:
        kind, ours, label = "native", False, "native"
        description = f"Triton's native {backend} backend ({config.runtime or f'libtriton_{backend}.so'})"
    return {
        "kind": kind,
        "backend": backend,
        "platform": config.platform,
        "runtime": config.runtime,
        "ours": ours,
        "label": label,
        "description": description,
    }
