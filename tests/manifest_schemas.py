"""Validation of manifests against published schemas, offline.

Kubernetes objects: kubernetes-validate's strict JSON schemas (no unknown fields), for the oldest
and the newest Kubernetes release it ships. KServe objects: the KServe SDK's models
(tests/kserve_schema.py), checked in a child process: the SDK's gRPC protos and tritonclient's
define the same `inference.*` messages, and one process cannot import both.
"""

from __future__ import annotations

import atexit
import functools
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import IO, Any

import jsonschema
import kubernetes_validate
from referencing import Registry, Resource

K8S_VERSIONS = (kubernetes_validate.utils.all_versions()[0], kubernetes_validate.utils.latest_version())
KSERVE_ROOTS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
}


class SchemaError(AssertionError):
    pass


def validate(doc: dict[str, Any]) -> None:
    """Raise SchemaError naming the first field that the published schema refuses."""
    if (doc.get("apiVersion"), doc.get("kind")) in KSERVE_ROOTS:
        error = _kserve_checker().check(doc)
        if error is not None:
            raise SchemaError(error)
        return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(map(str, exc.path))
            raise SchemaError(f"{doc['kind']} (Kubernetes {version}) {path}: {exc.message}") from exc


class _KServeChecker:
    """tests/kserve_schema.py in a child process: one JSON document a line in, one answer out."""

    def __init__(self) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-m", "tests.kserve_schema"],
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        atexit.register(self.close)

    def check(self, doc: dict[str, Any]) -> str | None:
        stdin, stdout = self._pipes()
        stdin.write(json.dumps(doc) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"tests.kserve_schema exited with {self._child.wait()}")
        answer: str | None = json.loads(line)["error"]
        return answer

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self._child.stdin is not None and self._child.stdout is not None
        return self._child.stdin, self._child.stdout

    def close(self) -> None:
        stdin, stdout = self._pipes()
        stdin.close()
        self._child.wait()
        stdout.close()


@functools.cache
def _kserve_checker() -> _KServeChecker:
    return _KServeChecker()


def validate_k8s_type(value: Any, type_name: str, path: str) -> None:
    """`value` against the strict schema of the Kubernetes type the client calls `type_name`
    (`V1Container` -> io.k8s.api.core.v1.Container)."""
    definitions, by_client_name = _k8s_definitions()
    if type_name not in by_client_name:
        raise SchemaError(f"{path}: no unique Kubernetes definition for {type_name}")
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"{definitions}#/$defs/{by_client_name[type_name]}"}, registry=_registry()
    )
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = ".".join([path, *map(str, error.path)])
        raise SchemaError(f"{where}: {error.message}")


@functools.cache
def _definitions_json() -> dict[str, Any]:
    version = kubernetes_validate.utils.latest_version()
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    loaded: dict[str, Any] = json.loads((folder / "_definitions.json").read_text())
    return loaded


@functools.cache
def _k8s_definitions() -> tuple[str, dict[str, str]]:
    """The definitions' URI, and client class name (`V1Container`) -> definition key
    (`io.k8s.api.core.v1.Container`), leaving out names that two groups share."""
    defs = _definitions_json()
    names: dict[str, list[str]] = {}
    for key in defs["$defs"]:
        *_, version, kind = key.split(".")
        names.setdefault(version[0].upper() + version[1:] + kind, []).append(key)
    return defs["$id"], {name: keys[0] for name, keys in names.items() if len(keys) == 1}


@functools.cache
def _registry() -> Registry:
    defs = _definitions_json()
    registry: Registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
    return registry
