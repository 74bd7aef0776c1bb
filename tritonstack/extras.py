"""The optional parts of the distribution. `pip install tritonstack` is the client; the packages
that need more check for it when imported, so a missing extra is one error naming the extra to
install instead of an ImportError from deep inside.

The embedded Triton (`tritonstack.serve`) is checked when it starts, not when imported: a remote
server (`--external`, `bench --url`) needs no nvidia-pytriton, and its wheel exists for Linux only.
"""

from __future__ import annotations

import importlib.util

from tritonstack.errors import UsageError

_EXPORT = ("torch", "onnx", "onnxscript", "onnxruntime", "safetensors")

# Import names each extra provides, as pyproject.toml declares them (tests/test_packaging.py
# checks the two agree).
EXTRAS: dict[str, tuple[str, ...]] = {
    "export": _EXPORT,
    "bench": (*_EXPORT, "matplotlib"),
    "s3": ("boto3",),
}


class MissingExtra(UsageError):
    """A part of tritonstack was imported without the extra that it needs installed."""


def install_command(extra: str) -> str:
    return f"pip install 'tritonstack[{extra}]'"


def missing_modules(extra: str) -> list[str]:
    """The import names of `extra` that cannot be found (found without importing them)."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def require(package: str, extra: str) -> None:
    """Raise MissingExtra unless everything `extra` provides is installed."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(
            f"{package} needs the {extra!r} extra ({', '.join(missing)} not installed): "
            f"{install_command(extra)}"
        )
