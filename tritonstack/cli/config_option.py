"""The `--config` option of `train` and `export`: a model config as inline JSON or a JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tritonstack.errors import UsageError


def parse_config(text: str | None) -> dict[str, Any] | None:
    """`--config` takes inline JSON or a path to a JSON file."""
    if text is None:
        return None
    source = Path(text).read_text() if Path(text).is_file() else text
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--config {text!r} is neither a JSON file nor inline JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise UsageError("--config must be a JSON object of config fields")
    return value
