"""The `--config` option of `train` and `export`: a model config as inline JSON or a JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tritonstack.errors import UsageError


def parse_config(text: str | None) -> dict[str, Any] | None:
    """`--config` takes inline JSON (it starts with `{`) or a path to a JSON file. Inline JSON is
    never taken for a path: a long one would be refused as a file name."""
    if text is None:
        return None
    inline = text.lstrip().startswith(("{", "["))
    try:
        source = text if inline else Path(text).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(
            f"--config {text!r} is neither inline JSON nor a readable JSON file ({reason})"
        ) from exc
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        where = "inline JSON" if inline else f"JSON file {text}"
        raise UsageError(f"--config: bad {where}: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    if not isinstance(value, dict):
        raise UsageError("--config must be a JSON object of config fields, e.g. '{\"embedding_dim\": 16}'")
    return value
