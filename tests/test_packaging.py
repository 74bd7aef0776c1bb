"""The distribution as users get it: the wheel provides one import name, `tritonstack`; its base
install is the client (no torch, onnx, onnxruntime, nvidia-pytriton or matplotlib), which calls
the embedded Triton from a fresh virtual environment on each supported Python found here; the
extras provide what the code checks for; the Triton backend stub runs from an installed wheel.

The wheel is built once per module from a copy of the checkout (a stale `build/` folder would
leak deleted modules into it). The light-client venvs install from PyPI; pip's cache makes
later runs quick.
"""

from __future__ import annotations

import ast
import glob
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from email.message import Message
from email.parser import Parser
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.conftest import ServerFactory
from tests.reference_models import TINY_SPEC, TinyLinear
from tritonstack.client import TritonClient
from tritonstack.export.formats import ExportOptions
from tritonstack.export.onnx import export as export_onnx
from tritonstack.export.repository import build_config, write_version
from tritonstack.extras import EXTRAS, require
from tritonstack.formats import Format
from tritonstack.spec import Array

ROOT = Path(__file__).parent.parent
# The Pythons the README's support matrix states for the client; requires-python says the same.
SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# What the base install must not bring: distributions, and the import names they provide.
_HEAVY = ("torch", "onnx", "onnxscript", "onnxruntime", "safetensors", "matplotlib")
HEAVY_DISTRIBUTIONS = (*_HEAVY, "nvidia-pytriton")
HEAVY_MODULES = (*_HEAVY, "pytriton")
LINUX_X86 = {"platform_system": "Linux", "platform_machine": "x86_64"}

SPEC = TINY_SPEC


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    junk = shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "checkpoints", "triton_repo")
    shutil.copytree(ROOT, work / "src", symlinks=True, ignore=junk)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip_wheel, "-w", work / "dist", work / "src"], check=True, capture_output=True, cwd=work)
    (built,) = (work / "dist").glob("tritonstack-*.whl")
    return built


def _dist_info(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (path,) = (n for n in archive.namelist() if n.endswith(f".dist-info/{name}"))
        return archive.read(path).decode()


def _metadata(wheel: Path) -> Message:
    return Parser().parsestr(_dist_info(wheel, "METADATA"))


def _requirements(wheel: Path) -> list[Requirement]:
    return [Requirement(r) for r in _metadata(wheel).get_all("Requires-Dist") or []]


def _names(requirements: list[Requirement], extra: str | None) -> set[str]:
    """Distributions that `extra` (None: the base install) adds on Linux x86-64, following the
    extras it includes (`tritonstack[export,serve]`)."""
    names: set[str] = set()
    for req in requirements:
        own = req.marker is not None and req.marker.evaluate({**LINUX_X86, "extra": extra or ""})
        if not (own if extra else req.marker is None or own):
            continue
        if canonicalize_name(req.name) == "tritonstack":
            names = names.union(*(_names(requirements, e) for e in req.extras))
        else:
            names.add(canonicalize_name(req.name))
    return names


def test_one_import_root(wheel: Path) -> None:
    paths = [line.rsplit(",", 2)[0] for line in _dist_info(wheel, "RECORD").splitlines() if line]
    tops = {p.split("/")[0] for p in paths}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"tritonstack"}, tops
    assert _dist_info(wheel, "top_level.txt").split() == ["tritonstack"]
    # Triton loads our backends by path: package data, or the embedded server has none.
    assert {f"tritonstack/serve/backends/{b}/model.py" for b in ("onnxruntime", "pytorch")} <= set(paths)


def test_base_install_is_the_client_and_metadata_uses_ranges(wheel: Path) -> None:
    requirements = _requirements(wheel)
    base = _names(requirements, None)
    assert {"numpy", "tritonclient"} <= base and not base & set(HEAVY_DISTRIBUTIONS), base
    (numpy,) = (r for r in requirements if r.name == "numpy" and r.marker is None)
    assert numpy.specifier.contains("2.2.6"), "the client must allow numpy 2"
    pinned = [str(r) for r in requirements if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, "exact pins belong in constraints.txt, not in the package metadata"


def test_serve_installs_pytriton_only_where_its_wheel_exists(wheel: Path) -> None:
    requirements = _requirements(wheel)
    (pytriton,) = (r for r in requirements if r.name == "nvidia-pytriton")
    marker = pytriton.marker
    assert marker is not None

    def installs(system: str, machine: str, extra: str = "serve") -> bool:
        assert marker is not None
        return marker.evaluate({"platform_system": system, "platform_machine": machine, "extra": extra})

    assert installs("Linux", "x86_64") and installs("Linux", "aarch64")
    assert not any(installs(*p) for p in [("Darwin", "arm64"), ("Darwin", "x86_64"), ("Windows", "AMD64")])
    assert not installs("Linux", "x86_64", extra="")
    # The stub's numpy 1.x cap comes with it, and only with it.
    (cap,) = (r for r in requirements if r.name == "numpy" and r.marker is not None)
    assert not cap.specifier.contains("2.0.0") and str(cap.marker) == str(marker)


def test_extras_provide_what_the_code_checks_for(wheel: Path) -> None:
    """Each import name that `require` checks for an extra comes from a distribution that extra
    declares; `[all]` covers every extra that runs without a GPU; with it installed (this
    environment) every check passes."""
    requirements = _requirements(wheel)
    providers = importlib.metadata.packages_distributions()
    for extra, modules in EXTRAS.items():
        declared = _names(requirements, extra)
        for module in modules:
            # onnxruntime-gpu provides the same `onnxruntime` module on GPU hosts.
            dists = {canonicalize_name(d).removesuffix("-gpu") for d in providers[module]}
            assert dists & declared, f"[{extra}] checks {module} (from {dists}) but declares {declared}"
        require("tests", extra)
    without_gpu = set(_metadata(wheel).get_all("Provides-Extra") or []) - {"all", "dev", "tensorrt", "cuda"}
    assert _names(requirements, "all") == set().union(*(_names(requirements, e) for e in without_gpu))


def test_export_modules_that_need_the_extra_check_for_it_first() -> None:
    """A module of tritonstack.export that imports torch, ONNX... at its top imports `_extra` before
    them (the others stay importable in the base install: the CLI's parser uses them)."""
    unchecked = []
    for path in sorted((ROOT / "export").glob("*.py")):
        body = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.Import | ast.ImportFrom)]
        # (module, name) per imported name, in order: ("torch", "torch"), ("tritonstack.export", "_extra")
        imports = [
            (a.name if isinstance(n, ast.Import) else n.module or "", a.name) for n in body for a in n.names
        ]
        heavy = [i for i, (module, _) in enumerate(imports) if module.split(".")[0] in EXTRAS["export"]]
        guard = [i for i, imported in enumerate(imports) if imported == ("tritonstack.export", "_extra")]
        if heavy and not (guard and guard[0] < heavy[0]):
            unchecked.append(path.name)
    assert unchecked == []


def test_requires_python_is_the_supported_range(wheel: Path) -> None:
    stated = SpecifierSet(_metadata(wheel)["Requires-Python"])
    assert tuple(f"3.{m}" for m in range(30) if stated.contains(f"3.{m}.0")) == SUPPORTED_PYTHONS


@pytest.fixture(scope="module")
def served(
    triton_server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The embedded Triton started from this (full) environment: its gRPC url and repository."""
    root = tmp_path_factory.mktemp("packaging")
    artifact = export_onnx(TinyLinear(4, 2).eval(), SPEC, root, ExportOptions())
    repo = root / "repo"
    write_version(repo, SPEC.name, build_config(SPEC, Format.ONNX), {"model.onnx": artifact.path})
    server = triton_server_factory(repo)
    yield server.grpc_url, repo
    server.stop()


def _answer(url: str, x: Array) -> Array:
    """SPEC's output for `x`, asked from this environment."""
    with TritonClient(url, timeout=30) as triton:
        return triton.infer(SPEC.name, {"x": x})["y"]


def _run(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run outside this checkout's import path: the child sees only what it installed (and `env`)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run(
        list(map(str, args)), capture_output=True, text=True, env=clean | env, cwd=cwd, check=False
    )


def _interpreter(version: str) -> str | None:
    """A Python `version` on this machine with venv and ensurepip, or None."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [
        shutil.which(f"python{version}"),
        *sorted(glob.glob(f"{root}/versions/{version}.*/bin/python")),
        sys.executable,  # used only when it is `version`
    ]
    probe = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"
    for candidate in filter(None, candidates):
        found = subprocess.run([candidate, "-c", probe], capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout.strip() == version:
            return candidate
    return None


_PROBE = """
import importlib.metadata, importlib.util, json, sys
import numpy, tritonstack
installed = {canonical for d in importlib.metadata.distributions()
             for canonical in [d.metadata["Name"].lower().replace("_", "-")]}
print(json.dumps({
    "tritonstack": tritonstack.__file__,
    "numpy": numpy.__version__,
    "modules": [m for m in sys.argv[1].split(",") if importlib.util.find_spec(m) is not None],
    "distributions": [d for d in sys.argv[2].split(",") if d in installed],
}))
"""

# Imports every public module of the installed tritonstack: "" when it imports, else the error.
_IMPORT_ALL = """
import importlib, json, pathlib, tritonstack
root = pathlib.Path(tritonstack.__file__).parent
names = sorted(
    ".".join(("tritonstack", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
    for p in root.rglob("*.py")
    if all((d / "__init__.py").is_file() for d in p.parents if root in (d, *d.parents))
    and not any(part.startswith("_") and part != "__init__.py" for part in p.relative_to(root).parts)
)
outcome = {}
for name in names:
    try:
        importlib.import_module(name)
        outcome[name] = ""
    except Exception as exc:
        outcome[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(outcome))
"""

_CLIENT_CALL = """
import sys
import numpy as np
from tritonstack.client import TritonClient
url, model, inputs, outputs = sys.argv[1:]
with TritonClient(url, timeout=30) as triton:
    np.savez(outputs, **triton.infer(model, dict(np.load(inputs))))
"""

# Each subcommand of a profile the base install lacks, and the extra its one-line refusal names.
_NEEDS_AN_EXTRA = [
    (("train", "--arch", "dlrm"), "export"),
    (("export", "model.pt"), "export"),
    (("bench", "compare", "a.json", "b.json"), "bench"),
    (("serve", "--repo", "empty-repo"), "serve"),
]


@pytest.mark.server
@pytest.mark.timeout(900)
@pytest.mark.parametrize("version", SUPPORTED_PYTHONS)
def test_light_client_in_a_fresh_venv(
    version: str, wheel: Path, served: tuple[str, Path], tmp_path: Path
) -> None:
    """`pip install tritonstack` (no extras) into a new venv calls the embedded Triton through
    `tritonstack infer` and `TritonClient`, with none of the heavy packages importable; every
    other subcommand names the extra it needs."""
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} with venv and ensurepip on this machine")
    url, _ = served
    venv = tmp_path / "venv"
    py, cli = venv / "bin" / "python", venv / "bin" / "tritonstack"
    assert _run(python, "-m", "venv", venv, cwd=tmp_path).returncode == 0
    installed = _run(py, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]

    probe = _run(py, "-c", _PROBE, ",".join(HEAVY_MODULES), ",".join(HEAVY_DISTRIBUTIONS), cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["tritonstack"].startswith(str(venv)), found  # the wheel's copy, not this checkout
    assert found["modules"] == [] and found["distributions"] == [], found
    assert int(found["numpy"].split(".")[0]) >= 2, f"the base install resolved numpy {found['numpy']}"

    for command in ((), ("export",), ("demo",), ("bench",)):  # every parser builds without extras
        assert _run(cli, *command, "--help", cwd=tmp_path).returncode == 0, command
    infer = _run(cli, "infer", SPEC.name, "--url", url, "--random", "3", cwd=tmp_path)
    assert infer.returncode == 0 and "y: float32 [3, 2]" in infer.stdout, infer.stdout + infer.stderr
    x = np.random.default_rng(0).standard_normal((5, 4), dtype=np.float32)
    np.savez(tmp_path / "inputs.npz", x=x)
    call = _run(py, "-c", _CLIENT_CALL, url, SPEC.name, "inputs.npz", "outputs.npz", cwd=tmp_path)
    assert call.returncode == 0, call.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "outputs.npz")["y"], _answer(url, x))

    (tmp_path / "empty-repo").mkdir()
    # The registry reads configs and the repository's records only: it needs no extra.
    listed = _run(cli, "models", "--repo", ".", "--json", cwd=tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stdout + listed.stderr
    for args, extra in _NEEDS_AN_EXTRA:
        refused = _run(cli, *args, cwd=tmp_path)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, f"{args}: {refused.stderr}"
        assert f"pip install 'tritonstack[{extra}]'" in lines[0], lines[0]
    imported = json.loads(_run(py, "-c", _IMPORT_ALL, cwd=tmp_path).stdout)
    assert not {m: e for m, e in imported.items() if e and not e.startswith("MissingExtra: ")}, imported
    guarded = {m.split(".")[1] for m, e in imported.items() if e}
    assert guarded == {"benchmarks", "export", "recsys", "runtimes", "cli"}, imported
    assert [m for m, e in imported.items() if e and m.startswith("tritonstack.cli")] == [
        "tritonstack.cli.demo"
    ]
    assert imported["tritonstack.export.pipeline"].endswith("pip install 'tritonstack[export]'")
    light = ("client", "serve", "export.flags", "export.formats", "export.deployment", "export.repository")
    assert not [imported[f"tritonstack.{m}"] for m in light if imported[f"tritonstack.{m}"]]

    size_mb = sum(p.lstat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6
    import_s = min(_seconds(py, "-c", "import tritonstack.client", cwd=tmp_path) for _ in range(5))
    print(
        f"\nlight client, Python {version}: venv {size_mb:.0f} MB, import tritonstack.client {import_s:.2f} s"
    )


def _seconds(*args: str | Path, cwd: Path) -> float:
    start = time.perf_counter()
    assert _run(*args, cwd=cwd).returncode == 0
    return time.perf_counter() - start


_SERVE_FROM_SITE = """
import sys
from pathlib import Path
import numpy as np
import tritonstack
from tritonstack.client import TritonClient
from tritonstack.serve import TritonServer
site, repo, model = sys.argv[1:]
assert tritonstack.__file__.startswith(site), tritonstack.__file__
with TritonServer(repo, log_path="triton.log") as server, TritonClient(server.grpc_url, timeout=30) as triton:
    environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\\0")
    (stub_path,) = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"TRITONSTACK_STUB_PATH=")]
    Path("stub_path.txt").write_text(stub_path)
    np.savez("outputs.npz", **triton.infer(model, dict(np.load("inputs.npz"))))
"""


@pytest.mark.server
def test_backend_stub_runs_from_an_installed_wheel(
    wheel: Path, served: tuple[str, Path], tmp_path: Path
) -> None:
    """The wheel installed into a plain site folder, beside this environment's other packages (as
    links, less tritonstack's own editable install): the launcher hands the stub that path, and the
    stub imports our backends from the wheel's copy."""
    url, repo = served
    site, others = tmp_path / "site", tmp_path / "others"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel],
        capture_output=True,
    )
    assert pip.returncode == 0, pip.stderr
    _site_packages_less(others, ("tritonstack",))
    x = np.random.default_rng(1).standard_normal((3, 4), dtype=np.float32)
    np.savez(tmp_path / "inputs.npz", x=x)

    # -S: no site-packages of this environment, so the editable install is out of reach.
    path = os.pathsep.join(map(str, (site, others)))
    ran = _run(
        sys.executable, "-S", "-c", _SERVE_FROM_SITE, site, repo, SPEC.name, cwd=tmp_path, PYTHONPATH=path
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "outputs.npz")["y"], _answer(url, x))
    stub_path = (tmp_path / "stub_path.txt").read_text().split(os.pathsep)
    assert [p for p in stub_path if (Path(p) / "tritonstack").is_dir()] == [str(site)], stub_path
    assert not [p for p in stub_path if glob.glob(f"{p}/__editable__*")], stub_path


def _site_packages_less(folder: Path, names: tuple[str, ...]) -> Path:
    """`folder` holding links to this environment's installed packages, less tritonstack's own
    editable install and the distributions `names` (with their import folders and metadata)."""
    folder.mkdir()
    skip = ("__editable__", "__pycache__", *names)
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(skip):
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.mark.server
def test_demo_without_the_serve_extra_stops_before_training(tmp_path: Path) -> None:
    """Every package but nvidia-pytriton (its `pytriton` module and `nvidia_pytriton*` folders):
    the demo refuses in one line naming the extra, before it trains or writes anything."""
    others = _site_packages_less(tmp_path / "others", ("tritonstack", "pytriton", "nvidia_pytriton"))
    path = os.pathsep.join(map(str, (ROOT, others)))
    demo = [sys.executable, "-S", "-m", "tritonstack.cli", "demo", "--preset", "tiny", "--steps", "1"]
    ran = _run(*demo, "--checkpoints", "ckpt", "--repo", "repo", cwd=tmp_path, PYTHONPATH=path)
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "repo").exists()
    lines = ran.stderr.strip().splitlines()
    assert ran.returncode == 2 and len(lines) == 1, ran.stderr
    assert "pip install 'tritonstack[serve]'" in lines[0], lines[0]
