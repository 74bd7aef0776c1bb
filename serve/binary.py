"""Where the `nvidia-pytriton` wheel keeps Triton: the server binary, its libraries, the Python
backend and the backend stub built for the running Python.

`pytriton` itself is never imported (its Python API breaks on some interpreters); only the
package's location is looked up.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonstack.errors import BinaryNotFound
from tritonstack.extras import install_command

# nvidia-pytriton's wheels are built for manylinux_2_35 (glibc 2.35+) on x86-64 and aarch64.
_FIX = f"fix: {install_command('serve')} (Linux x86-64 or aarch64 with glibc 2.35+, Python 3.10-3.13)"


@dataclass(frozen=True)
class TritonInstall:
    """The parts of one Triton install that the launcher needs."""

    server: Path  # the tritonserver executable
    libs: Path  # shared libraries it links against: goes on LD_LIBRARY_PATH
    python_backend: Path  # libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for the running Python


def pytriton_dir() -> Path | None:
    """The installed `pytriton` package directory, found without executing the package."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_triton(package: Path | None = None) -> TritonInstall:
    """Locate every part under `package` (default: the installed `pytriton`), or say what is missing."""
    package = package or pytriton_dir()
    if package is None:
        raise BinaryNotFound(f"the nvidia-pytriton package is not installed; {_FIX}")
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        server=root / "bin" / "tritonserver",
        libs=package.parent / "nvidia_pytriton.libs",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
    )
    required = {
        "the tritonserver binary": install.server,
        "Triton's libraries": install.libs,
        "the Python backend": install.python_backend / "libtriton_python.so",
        f"the Python backend stub for Python {version}": install.stub,
    }
    for what, path in required.items():
        if not path.exists():
            raise BinaryNotFound(f"{what} is missing ({path}); {_FIX}")
    if int(np.__version__.split(".")[0]) >= 2:
        # Seen on the H100 machine: with numpy 2 the stub's as_numpy() hands models scrambled tensors.
        raise BinaryNotFound(
            f"the Python backend stub of nvidia-pytriton 0.7.0 is built for numpy 1.x, and numpy "
            f"{np.__version__} is installed; fix: pip install 'numpy<2'"
        )
    if ctypes.util.find_library(f"python{version}") is None:
        # The stub embeds CPython: without a shared libpython it dies when the first model loads.
        raise BinaryNotFound(
            f"the Python backend stub needs a shared libpython{version}.so, and none is installed; "
            f"fix: apt-get install libpython{version} (Debian/Ubuntu) "
            "or use a Python built with --enable-shared"
        )
    return install
