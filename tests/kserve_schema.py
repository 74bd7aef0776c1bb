"""KServe objects against the KServe SDK's models; run as `python -m tests.kserve_schema`, one
JSON document a line on stdin, `{"error": null | "..."}` a line on stdout (see manifest_schemas).

The SDK's models name every field of the CRDs (`attribute_map`) with its type (`openapi_types`)
and refuse missing required fields and values outside an enum when built. The walk applies them to
the document, refusing unknown fields, and checks each embedded Kubernetes type (containers,
probes, volumes, ...) against kubernetes-validate's strict schema of that type.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import kserve.models

from tests.manifest_schemas import KSERVE_ROOTS, SchemaError, validate_k8s_type

_PRIMITIVES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": (int, float),
    "object": object,
}


def _walk(value: Any, type_name: str, path: str) -> None:
    if match := re.fullmatch(r"list\[(.*)\]", type_name):
        _expect(isinstance(value, list), path, "a list")
        for i, item in enumerate(value):
            _walk(item, match.group(1), f"{path}[{i}]")
    elif match := re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name):
        _expect(isinstance(value, dict), path, "a mapping")
        for key, item in value.items():
            _walk(item, match.group(2), f"{path}.{key}")
    elif type_name in _PRIMITIVES:
        _expect(isinstance(value, _PRIMITIVES[type_name]), path, type_name)
    elif hasattr(kserve.models, type_name):
        _walk_model(value, getattr(kserve.models, type_name), path)
    else:
        validate_k8s_type(value, type_name, path)


def _walk_model(value: Any, model: type, path: str) -> None:
    _expect(isinstance(value, dict), path, f"a {model.__name__} mapping")
    by_json = {json_key: attr for attr, json_key in model.attribute_map.items()}  # type: ignore[attr-defined]
    unknown = sorted(set(value) - set(by_json))
    if unknown:
        raise SchemaError(f"{path}: {model.__name__} has no field {unknown[0]!r}")
    try:  # the SDK's own checks: required fields present, enum values allowed
        model(**{by_json[key]: item for key, item in value.items()})
    except ValueError as exc:
        raise SchemaError(f"{path}: {exc}") from exc
    for key, item in value.items():
        _walk(item, model.openapi_types[by_json[key]], f"{path}.{key}")  # type: ignore[attr-defined]


def _expect(ok: bool, path: str, what: str) -> None:
    if not ok:
        raise SchemaError(f"{path}: expected {what}")


def main() -> None:
    for line in sys.stdin:
        doc = json.loads(line)
        try:
            _walk(doc, KSERVE_ROOTS[(doc["apiVersion"], doc["kind"])], doc["kind"])
            error = None
        except SchemaError as exc:
            error = str(exc)
        print(json.dumps({"error": error}), flush=True)


if __name__ == "__main__":
    main()
