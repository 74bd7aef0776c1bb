"""Layers point one way: the import-linter contracts in pyproject.toml hold on this tree and catch
a sideways import, no module leads back to itself through its imports, and the Triton backend
stub imports only serving's batching and the foundation.

grimp (import-linter's graph) walks the package directory, following the links that put the
design card's folders (export/, client/, ...) under `tritonstack`; the first test checks that it
sees every module in them. The backends' model.py files are no modules of the package (Triton's
stub loads them by path), so their imports are read from their source.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import tritonstack

PACKAGE = Path(tritonstack.__file__).parent
PYPROJECT = PACKAGE.parent / "pyproject.toml"
BACKENDS = sorted((PACKAGE / "serve" / "backends").glob("*/model.py"))
# What a backend may import from the project: the stub has our path but none of the exporter,
# the client, the models or the benchmarks is needed there.
BACKEND_IMPORTS = {
    "tritonstack.errors",
    "tritonstack.spec",
    "tritonstack.formats",
    "tritonstack.serve.batching",
    "tritonstack.runtimes.tensorrt",
    "tritonstack.runtimes.runners",  # pytorch: what forward may return, the exporter's rule too
    "tritonstack.runtimes.device",  # GPU instances: tensors where Triton put them (DLPack)
}


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("tritonstack", cache_dir=None)


def _lint_imports(path_root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter with the project's contracts on the `tritonstack` found under `path_root`
    (it looks in its working directory first)."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--no-logo", str(PYPROJECT)],
        cwd=path_root,
        env={**os.environ, "PYTHONPATH": str(path_root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """Every loop of imports, as `a -> b -> ... -> a`, found from each import that leads back."""
    loops = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                loops.append((importer, *back))
    return loops


def _in_packages(path: Path) -> bool:
    """Whether every folder from the package down to `path` is a package (not backends/*/)."""
    return all(
        (folder / "__init__.py").is_file() for folder in path.parents if PACKAGE in (folder, *folder.parents)
    )


def test_the_graph_holds_every_module_of_the_linked_folders() -> None:
    modules = _graph().modules
    for folder in ("export", "client", "serve", "benchmarks", "recsys", "runtimes", "cli"):
        assert (PACKAGE / folder).is_dir()
        files = [p for p in (PACKAGE / folder).rglob("*.py") if _in_packages(p)]
        names = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) for p in files}
        names = {name.removesuffix(".__init__") for name in names}
        assert names and names <= modules, f"grimp misses {sorted(names - modules)}"


def test_the_contracts_hold() -> None:
    result = _lint_imports(PACKAGE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and " 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "sideways", "contract"),
    [
        ("serve/batching.py", "tritonstack.export.repository", "Layers"),
        ("spec.py", "tritonstack.formats", "Layers"),
        ("runtimes/tensorrt.py", "tritonstack.export.onnx", "Layers"),
        ("client/_wire.py", "tritonstack.cli", "Layers"),
        ("export/verify.py", "tritonstack.client", "The exporter builds on recsys"),
    ],
)
def test_the_contracts_catch_an_import_against_the_layers(
    tmp_path: Path, module: str, sideways: str, contract: str
) -> None:
    """A copy of the package (links resolved) with one added import breaks the named contract."""
    copy = tmp_path / "tritonstack"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "results", "*.md"))
    with (copy / module).open("a") as source:
        source.write(f"\nimport {sideways}  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout
    broken = result.stdout.split("Broken contracts")[-1]
    importer = "tritonstack." + module.removesuffix(".py").replace("/", ".")
    assert contract in broken and f"{importer} -> {sideways}" in broken


def test_no_module_imports_itself_through_others() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_loop() -> None:
    graph = _graph()
    graph.add_import(importer="tritonstack.client._region", imported="tritonstack.client._shm")
    assert ("tritonstack.client._region", "tritonstack.client._shm", "tritonstack.client._region") in _cycles(
        graph
    )


@pytest.mark.parametrize("model_py", BACKENDS, ids=lambda p: p.parent.name)
def test_backends_import_only_batching_and_the_foundation(model_py: Path) -> None:
    tree = ast.parse(model_py.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    ours = {name for name in imported if name.split(".")[0] == "tritonstack"}
    assert ours and ours <= BACKEND_IMPORTS, sorted(ours - BACKEND_IMPORTS)


def test_what_the_backend_stub_imports_of_ours_stays_light() -> None:
    """Importing the backends' shared module loads none of the exporter, client, models, benchmarks
    or CLI, nor torch or ONNX (each backend imports its own runtime)."""
    code = "import sys, tritonstack.serve.batching, tritonstack.formats; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    ours = ("export", "client", "recsys", "benchmarks", "cli", "runtimes")
    heavy = tuple(f"tritonstack.{name}" for name in ours) + ("torch", "onnx", "onnxruntime")
    assert not [m for m in loaded.split() if m in heavy or m.startswith(tuple(h + "." for h in heavy))]
