"""The backend directory given to `tritonserver --backend-directory`.

`python/` holds the Python backend, the stub for the running Python and `stub_site.py`. The
wheel's Triton has only the Python backend, so our Python-based backends stand in for the
native ones: `onnxruntime/model.py` serves `platform: "onnxruntime_onnx"`, `pytorch/model.py`
serves `pytorch_libtorch`. The directory is keyed by a hash of its contents, built in a temporary
directory and renamed into place, so it is built once and two processes can race safely.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from tritonstack.serve.binary import TritonInstall

log = logging.getLogger(__name__)

_SOURCES = Path(__file__).parent / "backends"
_PYTHON_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tritonstack" / "backends"


def _layout(install: TritonInstall) -> dict[str, Path]:
    """Relative path in the backend directory -> source file."""
    files = {f"python/{name}": install.python_backend / name for name in _PYTHON_FILES}
    files["python/triton_python_backend_stub"] = install.stub
    files["python/stub_site.py"] = Path(__file__).parent / "stub_site.py"  # on the stub's sys.path
    for model_py in sorted(_SOURCES.glob("*/model.py")):
        files[f"{model_py.parent.name}/model.py"] = model_py
    return files


def backend_directory(install: TritonInstall, cache_dir: Path | None = None) -> Path:
    """The assembled backend directory for `install` (built on first use)."""
    files = _layout(install)
    digest = hashlib.sha256()
    for rel, src in files.items():
        digest.update(rel.encode() + b"\0" + src.read_bytes())
    cache_dir = cache_dir or default_cache_dir()
    target = cache_dir / digest.hexdigest()[:16]
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=cache_dir) as tmp:
        staging = Path(tmp) / "backends"
        for rel, src in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, staging / rel)
        try:
            os.rename(staging, target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # Another process published the same contents first.
    log.info("backend directory %s", target)
    return target
