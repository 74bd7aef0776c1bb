"""Issue 17's probes kept as regressions, on the real Triton and the real `tritonstack serve`:

- D2: bound beyond loopback, every admin API is closed over gRPC (checked one by one from the
  host's non-loopback address), HTTP does not listen there, and what Triton's command line shows
  (`ps`) opens nothing, not even to a client speaking raw HTTP/2;
- D3: a broken model is named, one line each, before Triton starts; under `--watch` as it happens,
  once; an export killed before it finishes leaves no config without a version;
- D4: a killed backend stub makes its model not ready and is replaced within seconds; a killed
  Triton ends `serve` with one line and leaves no process or shared memory region behind;
- message size: the client caps what it sends and accepts; Triton keeps no pooled copy of a huge
  request it refused.
"""

from __future__ import annotations

import ipaddress
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from torch import nn
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerFactory
from tests.reference_models import FRAGILE, write_fragile_model
from tritonstack.cli import main
from tritonstack.client import ClientError, InvalidInput, TritonClient
from tritonstack.export.repository import build_config, write_version
from tritonstack.formats import Format
from tritonstack.serve import TritonServer, free_port
from tritonstack.serve.admin import is_loopback
from tritonstack.serve.repository_check import model_problem
from tritonstack.serve.server import LOAD_ALL
from tritonstack.spec import ModelSpec, TensorSpec

X = np.ones((1, 4), np.float32)
SERVE_START_S = 60.0
# Detection takes two supervision checks (0.5 s apart); unloading a model whose stub is dead and
# loading it again took 2.5-9 s on the 2-core machine (the new stub imports torch).
STUB_RESTART_S = 20.0


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    write_fragile_model(root / "repo", root)
    return root / "repo"


# -- D2: admin APIs beyond loopback ------------------------------------------------------------


def _non_loopback_address() -> str | None:
    """This host's address on the interface that routes outwards, or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1; a UDP connect sends nothing
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


@pytest.fixture(scope="module")
def address() -> str:
    found = _non_loopback_address()
    if found is None:
        pytest.skip("this host has no non-loopback address to reach a server bound to 0.0.0.0 from")
    return found


@pytest.fixture(scope="module")
def exposed(repo: Path, triton_server_factory: ServerFactory) -> Iterator[TritonServer]:
    """Bound to every interface, explicit model control: the model-repository API is live."""
    server = triton_server_factory(repo, host="0.0.0.0", model_control_mode="explicit", extra_args=[LOAD_ALL])
    yield server
    server.stop()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


GRPC_ADMIN_CALLS: dict[str, Callable[[grpcclient.InferenceServerClient], Any]] = {
    "model-repository index": lambda c: c.get_model_repository_index(),
    "model-repository load": lambda c: c.load_model(FRAGILE.name),
    "model-repository unload": lambda c: c.unload_model(FRAGILE.name),
    "shared-memory register": lambda c: c.register_system_shared_memory("r", "/tritonstack-probe", 64),
    "shared-memory status": lambda c: c.get_system_shared_memory_status(),
    "shared-memory unregister": lambda c: c.unregister_system_shared_memory(),
    "cuda-shared-memory status": lambda c: c.get_cuda_shared_memory_status(),
    "cuda-shared-memory unregister": lambda c: c.unregister_cuda_shared_memory(),
    "trace get": lambda c: c.get_trace_settings(),
    "trace update": lambda c: c.update_trace_settings(settings={"trace_file": "/tmp/tritonstack-probe"}),
    "logging get": lambda c: c.get_log_settings(),
    "logging update": lambda c: c.update_log_settings({"log_file": "/tmp/tritonstack-probe"}),
}
HTTP_ADMIN_PATHS = [
    "repository/index",
    f"repository/models/{FRAGILE.name}/unload",
    "systemsharedmemory/region/r/register",
    "systemsharedmemory/status",
    "cudasharedmemory/status",
    "trace/setting",
    "logging",
]


@pytest.mark.parametrize("call", GRPC_ADMIN_CALLS)
def test_beyond_loopback_every_grpc_admin_api_is_closed(
    exposed: TritonServer, address: str, call: str
) -> None:
    with grpcclient.InferenceServerClient(f"{address}:{_port(exposed.grpc_url)}") as anyone:
        with pytest.raises(InferenceServerException, match="protocol is restricted"):
            GRPC_ADMIN_CALLS[call](anyone)


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.mark.parametrize("path", HTTP_ADMIN_PATHS)
def test_beyond_loopback_http_answers_health_probes_only(exposed: TritonServer, address: str, path: str):
    """Triton's HTTP endpoint is not reachable from the network; the HTTP port there refuses
    every admin path."""
    assert exposed.http_url.startswith("127.0.0.1:")
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        DIRECT.open(f"http://{address}:{_port(exposed.http_url)}/v2/{path}", data=b"{}", timeout=5)
    with pytest.raises(urllib.error.HTTPError, match="403") as refused:
        DIRECT.open(f"http://{address}:{_port(exposed.health_url)}/v2/{path}", data=b"{}", timeout=5)
    assert b"answers only /v2/health/live and /v2/health/ready" in refused.value.read()


def test_beyond_loopback_http_readiness_follows_triton(repo: Path, triton_server_factory, address: str):
    """Load balancers probe readiness on the server's address: ready once Triton is, not ready
    from the moment it drains (while gRPC still answers, serve's --drain-grace)."""
    server = triton_server_factory(repo, host="0.0.0.0", drain_grace=30)
    ready = f"http://{address}:{_port(server.health_url)}/v2/health/ready"
    with DIRECT.open(ready, timeout=5) as answer:
        assert answer.status == 200
    server.begin_drain()
    deadline = time.monotonic() + 5
    with pytest.raises(urllib.error.HTTPError, match="503"):
        while time.monotonic() < deadline:  # Triton stops taking HTTP connections within moments
            DIRECT.open(ready, timeout=5).close()
            time.sleep(0.1)
    with TritonClient(f"{address}:{_port(server.grpc_url)}") as triton:
        np.testing.assert_array_equal(triton.infer(FRAGILE.name, {"x": X})["y"], 2 * X)
    server.stop()


def test_beyond_loopback_serving_apis_stay_open(exposed: TritonServer, address: str) -> None:
    url = f"{address}:{_port(exposed.grpc_url)}"
    with TritonClient(url) as triton:  # metadata and config (the spec), inference, health
        np.testing.assert_array_equal(triton.infer(FRAGILE.name, {"x": X})["y"], 2 * X)
        assert triton.is_ready()
    with grpcclient.InferenceServerClient(url) as anyone:
        assert anyone.get_inference_statistics(FRAGILE.name).model_stats


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK header 'literal without indexing, new name', plain (no Huffman) strings."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def _raw_grpc_call(host: str, port: int, method: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """Everything the server sends back on stream 1 for an empty request to `method`, sent as raw
    HTTP/2 frames: nothing in the client checks the header names."""
    block = b"".join(
        _literal(name, value)
        for name, value in [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", method.encode()),
            (b":authority", b"triton"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *headers,
        ]
    )
    request = _frame(4, 0, 0, b"") + _frame(1, 4, 1, block) + _frame(0, 1, 1, b"\x00" + struct.pack(">I", 0))
    received = b""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + request)
        deadline = time.monotonic() + 5
        while b"grpc-status" not in received and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
    stream, offset = b"", 0
    while offset + 9 <= len(received):
        length = int.from_bytes(received[offset : offset + 3], "big")
        if int.from_bytes(received[offset + 5 : offset + 9], "big") & 0x7FFFFFFF == 1:
            stream += received[offset + 9 : offset + 9 + length]
        offset += 9 + length
    return stream


def test_the_command_line_opens_no_admin_api(exposed: TritonServer, address: str) -> None:
    """Whatever `ps` shows of Triton's command line, sent as headers from a raw HTTP/2 client
    that ignores gRPC's rules, opens no admin API; a loopback server shows what an open call
    answers."""
    assert exposed.pid is not None
    argv = Path(f"/proc/{exposed.pid}/cmdline").read_bytes().decode().split("\0")
    (restriction,) = [a for a in argv if a.startswith("--grpc-restricted-protocol=")]
    name, _, value = restriction.rsplit(":", 1)[1].partition("=")
    index = "/inference.GRPCInferenceService/RepositoryIndex"
    headers = [(f"triton-grpc-protocol-{name}".encode(), value.encode())]
    answer = _raw_grpc_call(address, _port(exposed.grpc_url), index, headers)
    assert b"grpc-status" in answer and FRAGILE.name.encode() not in answer
    loopback = TritonServer(exposed.repository, log_path=exposed.log_path.with_name("loopback.log")).start()
    try:
        assert FRAGILE.name.encode() in _raw_grpc_call("127.0.0.1", _port(loopback.grpc_url), index, [])
    finally:
        loopback.stop()


def test_admin_policy() -> None:
    assert not TritonServer(".").admin_closed  # loopback: whoever reaches it is on the host
    assert TritonServer(".", host="0.0.0.0").admin_closed
    assert not TritonServer(".", host="0.0.0.0", open_admin_apis=True).admin_closed
    assert TritonServer(".", host="0.0.0.0").http_host == "127.0.0.1"
    assert TritonServer(".", host="::1").http_host == "::1"
    hosts = ("127.0.0.1", "localhost", "::1", "0.0.0.0", "", "10.0.0.5")
    assert [is_loopback(h) for h in hosts] == [True, True, True, False, False, False]


# -- D3: broken models named, at once ------------------------------------------------------------


def _broken_repository(root: Path) -> Path:
    """The fragile model, plus one model with an invalid config, one with a config and no
    version, and one with a version and no config."""
    repo = root / "repo"
    write_fragile_model(repo, root)
    for name in ("bad_config", "no_version", "no_config"):
        (repo / name).mkdir()
    (repo / "bad_config" / "config.pbtxt").write_text(
        'name: "bad_config"\nplatform: "pytorch_libtorch"\nbogus: 1\n'
    )
    (repo / "bad_config" / "1").mkdir()
    (repo / "no_version" / "config.pbtxt").write_text((repo / FRAGILE.name / "config.pbtxt").read_text())
    (repo / "no_config" / "1").mkdir()
    return repo


@pytest.mark.timeout(150)
def test_serve_names_every_broken_model_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _broken_repository(tmp_path)
    started = time.monotonic()
    assert main(["serve", "--repo", str(repo)]) == 2
    assert time.monotonic() - started < 5, "Triton was started (or waited on) before the check"
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("tritonstack serve: error: 3 models in ")
    assert lines[1].startswith("  bad_config: ") and "is not a valid Triton model config" in lines[1]
    assert 'no field named "bogus"' in lines[1]
    assert lines[2].startswith("  no_config: no config.pbtxt (an interrupted export?)")
    assert lines[3].startswith("  no_version: config.pbtxt but no version directory")
    assert len(lines) == 4


def test_a_version_policy_selecting_no_existing_version_is_named(repo: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / FRAGILE.name
    shutil.copytree(repo / FRAGILE.name, model_dir)
    assert model_problem(model_dir) is None
    config = model_dir / "config.pbtxt"
    config.write_text(config.read_text() + "version_policy { specific { versions: [3, 4] } }\n")
    assert model_problem(model_dir) == (
        f"{config} serves versions 3, 4 (version_policy) but the version directories are 1: "
        "promote an existing version or re-export"
    )


def test_a_killed_export_leaves_no_config_without_a_version(tmp_path: Path, capsys) -> None:
    """The export of a new model is killed (SIGKILL: no clean-up runs) as it publishes its
    version; `serve` then names the leftover at once."""
    repo = tmp_path / "repo"
    script = f"""
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from tests.reference_models import write_fragile_model
from tritonstack.export import repository
repository._publish = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
write_fragile_model(Path({str(repo)!r}), Path({str(tmp_path)!r}))
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    model_dir = repo / FRAGILE.name
    versions = [p for p in model_dir.iterdir() if p.name.isdigit()]
    assert versions or not (model_dir / "config.pbtxt").exists(), "a config without a version"
    assert main(["serve", "--repo", str(repo)]) == 2
    assert f"  {FRAGILE.name}: no config.pbtxt (an interrupted export?)" in capsys.readouterr().err


class Serve:
    """`tritonstack serve` in a child process; its output lines are collected as they come."""

    def __init__(self, repo: Path, log: Path, *flags: str) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        command = [
            sys.executable,
            "-m",
            "tritonstack.cli",
            "serve",
            "--repo",
            str(repo),
            "--log-file",
            str(log),
        ]
        ports = ["--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port)]
        self.process = subprocess.Popen(
            [*command, *ports, *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s; got {self.seen}")

    def drain(self, seconds: float) -> list[str]:
        time.sleep(seconds)
        new = []
        while not self.lines.empty():
            new.append(self.lines.get())
        self.seen += new
        return new

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def triton_pid(self) -> int:
        (pid,) = [p for p, (ppid, _pgrp, _state) in _processes().items() if ppid == self.process.pid]
        return pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture()
def serve_factory(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(repo: Path, *flags: str) -> Serve:
        started.append(Serve(repo, tmp_path / f"triton-{len(started)}.log", *flags))
        return started[-1]

    yield start
    for serve in started:
        serve.stop()


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state letter) of every process."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        found[int(stat.parent.name)] = (int(ppid), int(pgrp), state)
    return found


@pytest.mark.server  # `tritonstack serve` in a child process
def test_watch_names_a_broken_model_once_as_it_happens(tmp_path: Path, repo: Path, serve_factory) -> None:
    live = tmp_path / "live"
    write_fragile_model(live, tmp_path)
    serve = serve_factory(live, "--watch")
    serve.wait_for("^Triton ready", SERVE_START_S)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a TorchScript archive")
    config = build_config(FRAGILE.renamed("late"), Format.TORCHSCRIPT)
    write_version(live, "late", config, {"model.pt": junk})
    serve.wait_for(r"^late: cannot be loaded: .*", 30)
    assert not [line for line in serve.drain(3) if line.startswith("late")], "reported more than once"
    write_version(live, "late", config, {"model.pt": repo / FRAGILE.name / "1" / "model.pt"})
    serve.wait_for("^late: loaded$", 30)
    with TritonClient(serve.url) as triton:
        np.testing.assert_array_equal(triton.infer("late", {"x": X})["y"], 2 * X)
    (live / "late" / "config.pbtxt").write_text("not a config")
    serve.wait_for(r"^late: cannot be loaded: .*config\.pbtxt is not a valid Triton model config: ", 30)


class Tripler(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 3.0


@pytest.mark.server  # `tritonstack serve` in a child process
def test_watch_serves_a_new_version_without_a_failed_request(tmp_path: Path, serve_factory) -> None:
    """The supervisor's rescan (explicit model control) replaces Triton's polling: a version
    published under traffic takes over with no request failing."""
    live = tmp_path / "live"
    write_fragile_model(live, tmp_path)
    serve = serve_factory(live, "--watch")
    serve.wait_for("^Triton ready", SERVE_START_S)
    answers: list[float] = []
    errors: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        with TritonClient(serve.url, timeout=10) as triton:
            while not stop.is_set():
                try:
                    answers.append(float(triton.infer(FRAGILE.name, {"x": X})["y"][0, 0]))
                except ClientError as exc:
                    errors.append(str(exc))

    tripler = tmp_path / "tripler.pt"
    torch.jit.script(Tripler()).save(str(tripler))  # type: ignore[no-untyped-call]
    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        time.sleep(1.0)
        write_version(live, FRAGILE.name, build_config(FRAGILE, Format.TORCHSCRIPT), {"model.pt": tripler})
        serve.wait_for(f"^{FRAGILE.name}: loaded$", 30)
        deadline = time.monotonic() + 10
        while answers[-1:] != [3.0] and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    print(f"{len(answers)} requests across the reload, {len(errors)} failed")
    assert not errors, errors[:3]
    assert answers[0] == 2.0 and answers[-1] == 3.0
    switched = answers.index(3.0)
    assert set(answers[:switched]) == {2.0} and set(answers[switched:]) == {3.0}


# -- D4: supervision -----------------------------------------------------------------------------


@pytest.mark.server  # `tritonstack serve` in a child process
def test_a_killed_stub_is_replaced_and_a_killed_triton_ends_serve(repo: Path, serve_factory) -> None:
    serve = serve_factory(repo)
    serve.wait_for("^Triton ready", SERVE_START_S)
    triton = serve.triton_pid()
    (stub,) = [p for p, (_ppid, pgrp, _state) in _processes().items() if pgrp == triton and p != triton]
    region = Path("/dev/shm") / Path(f"/proc/{stub}/cmdline").read_bytes().split(b"\0")[2].decode()
    assert region.exists()
    with TritonClient(serve.url, timeout=5) as client, grpcclient.InferenceServerClient(serve.url) as raw:
        os.kill(stub, signal.SIGKILL)
        killed = time.monotonic()
        deadline = killed + STUB_RESTART_S
        while raw.is_model_ready(FRAGILE.name) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert time.monotonic() < deadline, "the model stayed READY with a dead backend process"
        while not raw.is_model_ready(FRAGILE.name) and time.monotonic() < deadline:
            time.sleep(0.1)
        np.testing.assert_array_equal(client.infer(FRAGILE.name, {"x": X})["y"], 2 * X)
        print(f"model not ready, then answering again {time.monotonic() - killed:.1f} s after the kill")
    serve.wait_for(f"^{FRAGILE.name}: its backend process died; reloading the model$", 5)
    serve.wait_for(rf"^{FRAGILE.name}: reloaded in \d+\.\d s$", 5)

    regions = [
        Path("/dev/shm") / Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[2].decode()
        for p, (_ppid, pgrp, state) in _processes().items()
        if pgrp == triton and p != triton and state != "Z"
    ]
    os.kill(triton, signal.SIGKILL)
    killed = time.monotonic()
    assert serve.process.wait(15) == 2
    print(f"serve ended {time.monotonic() - killed:.1f} s after Triton was killed")
    serve.wait_for(r"^tritonstack serve: error: Triton exited unexpectedly \(killed by signal 9\)", 5)
    assert serve.drain(0) == []
    live = [p for p, (_ppid, pgrp, state) in _processes().items() if pgrp == triton and state != "Z"]
    assert live == [], "backend processes outlived Triton"
    assert regions and not [r for r in [region, *regions] if r.exists()], "shared memory left behind"


# -- message size ----------------------------------------------------------------------------------


WIDE = ModelSpec(
    "wide", (TensorSpec("x", "float32", (1024,)),), (TensorSpec("y", "float32", (1024,)),), max_batch_size=8
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, triton_server_factory: ServerFactory) -> TritonServer:
    """The fragile model, and `wide` (triples its input), whose full batch is 32 KiB."""
    root = tmp_path_factory.mktemp("size")
    write_fragile_model(root / "repo", root)
    torch.jit.script(Tripler()).save(str(root / "tripler.pt"))  # type: ignore[no-untyped-call]
    write_version(
        root / "repo", WIDE.name, build_config(WIDE, Format.TORCHSCRIPT), {"model.pt": root / "tripler.pt"}
    )
    return triton_server_factory(root / "repo")


def test_the_client_caps_what_it_sends(server: TritonServer) -> None:
    one, full = (np.ones((n, 1024), np.float32) for n in (1, WIDE.max_batch_size))
    with TritonClient(server.grpc_url, max_message_bytes=full.nbytes // 2) as small:
        np.testing.assert_array_equal(small.infer(WIDE.name, {"x": one})["y"], 3 * one)
        # over the cap: sent as requests of whole rows under it (client/_chunks.py)
        np.testing.assert_array_equal(small.infer(WIDE.name, {"x": full})["y"], 3 * full)
    with TritonClient(server.grpc_url, max_message_bytes=2 * one.nbytes - 1) as tiny:
        with pytest.raises(InvalidInput, match="one row takes 4,096 bytes, more than .* max_message_bytes"):
            tiny.infer(WIDE.name, {"x": one})
    with TritonClient(server.grpc_url) as default:
        np.testing.assert_array_equal(default.infer(WIDE.name, {"x": full})["y"], 3 * full)


def _rss_bytes(pid: int) -> int:
    (line,) = [
        line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS")
    ]
    return int(line.split()[1]) * 1024


def test_triton_keeps_no_copy_of_huge_requests(server: TritonServer) -> None:
    """Requests far over the model's batch limit, from a client without our cap: Triton refuses
    them, and afterwards holds less memory than they took together (0-110 MiB more for two of
    128 MiB; with its default request pool it kept 352-370 MiB). What it needs while it reads one is
    not capped: see the README's message size paragraph."""
    assert server.pid is not None
    huge = np.ones((8 * 2**20, 4), np.float32)  # 128 MiB
    tensor = grpcclient.InferInput("x", list(huge.shape), "FP32")
    tensor.set_data_from_numpy(huge)
    before = _rss_bytes(server.pid)
    with grpcclient.InferenceServerClient(server.grpc_url) as raw:
        for _ in range(2):
            with pytest.raises(InferenceServerException, match="batch-size must be <= 8"):
                raw.infer(FRAGILE.name, [tensor], client_timeout=120)
    retained = _rss_bytes(server.pid) - before
    print(f"Triton kept {retained / 2**20:.0f} MiB after refusing 2 x {huge.nbytes / 2**20:.0f} MiB")
    assert retained < 2 * huge.nbytes
