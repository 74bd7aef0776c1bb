"""The embedded Triton server: one `tritonserver` process from the `nvidia-pytriton` wheel.

`TritonServer` starts it on loopback (free ports unless given), waits until the server and every
model in the repository are ready, and turns the ways this fails into one-line errors: a busy
port (`PortInUse`), a model that does not load (`ModelLoadError`, quoting Triton's reason), or a
process that dies or hangs (`ServeError` with the log's tail). Models whose layout Triton cannot
load (serve/repository_check.py) are refused before it starts. `begin_drain()` then `stop()` stop
it gracefully. `ExternalServer` is the same surface for a server someone else runs.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import tritonstack
from tritonstack.errors import ModelLoadError, PortInUse, ServeError
from tritonstack.serve import shm_budget, stub_site
from tritonstack.serve.admin import closed_admin_args, is_loopback
from tritonstack.serve.backend_dir import backend_directory
from tritonstack.serve.binary import TritonInstall, find_triton
from tritonstack.serve.health import HealthEndpoint
from tritonstack.serve.repository_check import repository_problems
from tritonstack.serve.tls import Tls

log = logging.getLogger(__name__)

ControlMode = Literal["none", "explicit", "poll"]

_POLL_S = 0.1
_BIND_FAILURE = re.compile(r"(already in use|Failed to listen|failed to start \w+ service)", re.IGNORECASE)
_LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version \d+: (.*)")
_ALL_STARTED = "Started Metrics Service"
_PR_SET_PDEATHSIG = 1
# How long Triton waits on SIGTERM for the requests in flight to finish and its models to unload.
IN_FLIGHT_TIMEOUT_S = 10
# In explicit model control, the flag that loads every model at startup, as modes none and poll do.
LOAD_ALL = "--load-model=*"
_SHM_DIR = Path("/dev/shm")
# The readiness probe talks to Triton on this host: never through a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends SIGKILL to Triton if the process that started it
    dies (even by SIGKILL, which skips atexit)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class TritonServer:
    """A `tritonserver` child process serving `repository`; a context manager.

    Ports left as None are picked free. gRPC and metrics bind only `host` (loopback by default);
    HTTP binds loopback unless `host` is a loopback address itself, and then `http_port` on `host`
    answers health probes only (`health_url`, serve/health.py). The log (Triton's stdout and
    stderr) goes to `log_path`, default a kept file in a temporary directory.

    `tls` serves gRPC over TLS (mutual TLS with `Tls(mutual=True)`); readiness is checked over
    HTTP, which needs no client certificate. Bound to anything but loopback, gRPC refuses the
    admin protocols (serve/admin.py) unless `open_admin_apis`. The Python backend's shared memory
    regions carry `shm_prefix`, so `stop()` removes those of a server that was killed.

    `repository` is a folder, or a URL Triton reads itself (`serve.remote`: `s3://...`, with `env`
    holding the credentials its S3 client reads).

    `drain_grace` is the longest time between `begin_drain()` and `stop()`: while not ready,
    Triton keeps answering gRPC requests that long at most.
    """

    def __init__(
        self,
        repository: Path | str,
        *,
        host: str = "127.0.0.1",
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        log_path: Path | str | None = None,
        model_control_mode: ControlMode = "none",
        extra_args: Sequence[str] = (),
        startup_timeout: float = 120.0,
        install: TritonInstall | None = None,
        tls: Tls | None = None,
        open_admin_apis: bool = False,
        drain_grace: float = 0.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        # A URL (s3://...) is Triton's to read (serve.remote); anything else is a local folder.
        self.repository: Path | str = repository if "://" in str(repository) else Path(repository).resolve()
        self.env = dict(env or {})
        self.host = host
        self._requested = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        self._ports: dict[str, int] = {}
        self._log_path = Path(log_path) if log_path else None
        self.model_control_mode = model_control_mode
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self._install = install
        self.tls = tls
        self.admin_closed = not open_admin_apis and not is_loopback(host)
        self.http_host = host if is_loopback(host) else "127.0.0.1"
        self.drain_grace = drain_grace
        self.shm_prefix = f"tritonstack_{secrets.token_hex(6)}_"
        self._process: subprocess.Popen[bytes] | None = None
        self._held: http.client.HTTPConnection | None = None
        self._health: HealthEndpoint | None = None
        self._log_start = 0

    # -- addresses -------------------------------------------------------------------------------

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self._port('grpc')}"

    @property
    def http_url(self) -> str:
        """Triton's HTTP endpoint (loopback when `host` is not)."""
        return f"{self.http_host}:{self._port('http')}"

    @property
    def health_url(self) -> str:
        """Where load balancers probe `/v2/health/ready`: on `host`, whatever `http_url` is."""
        return f"{self._client_host}:{self._port('health')}" if self.admin_closed else self.http_url

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self._port('metrics')}/metrics"

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            self._log_path = Path(tempfile.mkdtemp(prefix="tritonstack-")) / "triton.log"
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def exit_code(self) -> int | None:
        """Triton's exit code (negative: the signal) once it has exited; None while it runs or
        when it was not started."""
        return self._process.poll() if self._process else None

    def log_tail(self, n: int = 40) -> str:
        """The last `n` lines Triton wrote in this run (an existing log file is appended to)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_start)
                lines = f.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    def _port(self, name: str) -> int:
        if name not in self._ports:
            raise ServeError("the server has not been started: call start() or use it in a `with` block")
        return self._ports[name]

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        code = self.exit_code()  # before stop(): whether Triton had already exited on its own
        self.stop()
        if isinstance(exc, ServeError) and code is not None:  # the likely cause, and where to look
            raise ServeError(f"{exc}; Triton exited (code {code}), its log: {self.log_path}") from exc

    def start(self) -> TritonServer:
        """Launch Triton and wait until it and every model are ready; raise a `ServeError` if not."""
        if self._process is not None:
            return self
        if isinstance(self.repository, Path) and not self.repository.is_dir():
            raise ServeError(f"model repository {self.repository} does not exist: export a model first")
        try:
            free_port(self.host)
        except OSError as exc:  # not an address of this machine, or no address at all
            raise ServeError(
                f"cannot bind host {self.host!r} ({exc.strerror or exc}): pass an address of this machine"
            ) from exc
        # A remote repository (Triton reads it) was checked by serve.remote.
        if isinstance(self.repository, Path) and (
            self.model_control_mode != "explicit" or LOAD_ALL in self.extra_args
        ):
            problems = repository_problems(self.repository)
            if problems:
                raise ModelLoadError(
                    f"{_models(problems)} in {self.repository} cannot be loaded; Triton was not started:"
                    + per_model_lines(problems)
                )
        shortfall = (
            shm_budget.problem(self.repository, shm_budget.free_bytes())
            if isinstance(self.repository, Path)
            else None  # Triton downloads a remote repository's models: their sizes are not known here
        )
        if shortfall:
            raise ServeError(shortfall)
        for name, port in self._requested.items():
            if port is not None and not 0 < port < 65536:
                raise ServeError(f"{name} port {port} is out of range: pass 1-65535 to --{name}-port")
            if port is not None and not port_is_free(self.host, port):
                raise PortInUse(
                    f"{name} port {port} on {self.host} is in use: pass another --{name}-port, "
                    "or omit it to pick a free one"
                )
        install = self._install or find_triton()
        started = time.perf_counter()
        # Ports picked free can be taken before Triton binds them: then pick again.
        attempts = 3 if all(p is None for p in self._requested.values()) else 1
        for attempt in range(1, attempts + 1):
            self._launch(install)
            try:
                self._wait_ready()
                break
            except PortInUse:
                self.stop()
                if attempt == attempts:
                    raise
                log.info("a picked port was taken before Triton bound it; retrying")
            except BaseException:
                self.stop()
                raise
        log.info(
            "Triton ready at %s in %.1f s (log %s)",
            self.grpc_url,
            time.perf_counter() - started,
            self.log_path,
        )
        return self

    def begin_drain(self) -> None:
        """Stop being ready while still serving, until `stop()`: Triton's HTTP endpoint refuses new
        connections, so readiness probes (`/v2/health/ready`) fail and load balancers move away,
        while gRPC requests are still answered.

        Triton on SIGTERM first refuses new HTTP connections and waits, up to its exit timeout,
        for the open ones to close; only then does it refuse new requests, finish those in
        flight, unload its models and exit. One HTTP connection opened here and closed by `stop()`
        holds it in that first step.
        """
        if self._process is None or self._process.poll() is not None:
            return
        host, port = self.http_url.rsplit(":", 1)
        held = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            held.request("GET", "/v2/health/live")
            held.getresponse().read()
        except OSError as exc:
            held.close()
            log.warning("no HTTP connection to Triton (%s): it stops serving at once", exc)
        else:
            self._held = held
        self._process.terminate()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; also kills leftover backend stubs. Idempotent.
        Triton refuses new requests, finishes those in flight (for up to IN_FLIGHT_TIMEOUT_S), then
        exits."""
        held, self._held = self._held, None
        if held is not None:
            held.close()  # Triton notices within a second
        health, self._health = self._health, None
        if health is not None:
            health.close()
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("Triton did not stop within %.0f s: killing it", timeout)
                process.kill()
                process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # stubs of a killed server
        for region in _SHM_DIR.glob(f"{self.shm_prefix}*"):  # what a killed server's stubs left
            region.unlink(missing_ok=True)
        log.info("Triton stopped (exit code %s)", process.returncode)

    def _launch(self, install: TritonInstall) -> None:
        self._ports = {name: port or free_port(self.host) for name, port in self._requested.items()}
        if self.admin_closed:  # the HTTP port on `host` answers probes; Triton's HTTP takes another
            self._ports["health"] = self._ports["http"]
            self._ports["http"] = free_port(self.http_host)
            try:
                self._health = HealthEndpoint(self.host, self._ports["health"], self.http_url)
            except OSError as exc:
                raise PortInUse(
                    f"http port {self._ports['health']} on {self.host} is in use ({exc.strerror}): pass "
                    "another --http-port, or omit it to pick a free one"
                ) from exc
        backends = backend_directory(install)
        args = [
            str(install.server),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--model-control-mode={self.model_control_mode}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self._ports['grpc']}",
            f"--http-address={self.http_host}",
            f"--http-port={self._ports['http']}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self._ports['metrics']}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            # Our configs are complete; auto-complete runs an extra stub per model (9.5 s -> 2.5 s
            # to load two small models on 2 cores).
            "--disable-auto-complete-config",
            # Keep serving when a model fails so the repository index can say why.
            "--exit-on-error=false",
            # Waiting for the connection begin_drain() holds spends the same budget: at most the
            # grace, and up to a second more (Triton counts whole seconds).
            f"--exit-timeout-secs={IN_FLIGHT_TIMEOUT_S + math.ceil(self.drain_grace) + 1}",
            "--log-verbose=0",
            # Pooled request objects keep the capacity of the largest request they held.
            "--grpc-infer-allocation-pool-size=0",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *(self.tls.args() if self.tls else ()),
            *(closed_admin_args() if self.admin_closed else ()),
            *self.extra_args,
        ]
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [str(install.libs), env.get("LD_LIBRARY_PATH")])
        )
        env[stub_site.ENV_VAR] = os.pathsep.join(_stub_python_path())
        env.update(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.debug("starting %s", " ".join(args))
        with self.log_path.open("ab") as log_file:
            self._log_start = log_file.tell()
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stop() can reap the stubs too
                # Linux ties the parent-death signal to the starting thread: main thread only.
                preexec_fn=_die_with_parent
                if threading.current_thread() is threading.main_thread()
                else None,
            )
        atexit.register(self.stop)

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._raise_from_log(f"Triton exited with code {self._process.returncode}")
            if self._models_ready():
                return
            time.sleep(_POLL_S)
        self._raise_from_log(f"Triton was not ready within {self.startup_timeout:.0f} s")

    def _models_ready(self) -> bool:
        """True once ready and every model that should load is READY; ModelLoadError on a failure.

        Asked over HTTP (Triton's KServe v2 endpoints): under mutual TLS, gRPC would refuse the
        launcher, which holds no client certificate."""
        # Endpoints start gRPC, HTTP, metrics in that order, after the models load; a port taken
        # meanwhile stops Triton. Until then the HTTP port may not be Triton's.
        if _ALL_STARTED not in self.log_tail(200):
            return False
        answer = self._http("repository/index", body=b"{}")
        if answer is None:
            return False
        index = json.loads(answer)
        failed = {m["name"]: m.get("reason", "") for m in index if m.get("state") == "UNAVAILABLE"}
        if failed:
            raise self._load_failure(failed)
        # No state: not asked for (explicit mode) or added after startup; Triton will not load it now.
        pending = [m for m in index if m.get("state", "") not in ("READY", "")]
        return not pending and self._http("health/ready") is not None

    def _load_failure(self, failed: dict[str, str]) -> ModelLoadError:
        return ModelLoadError(
            f"Triton could not load {_models(failed)} (log {self.log_path}):" + per_model_lines(failed)
        )

    def _http(self, path: str, body: bytes | None = None) -> bytes | None:
        """Triton's answer to GET `/v2/<path>` (POST with a body), or None without one: not up yet,
        not ready (an HTTP error), or just died (the caller checks the process)."""
        request = urllib.request.Request(f"http://{self.http_url}/v2/{path}", data=body)
        try:
            with _DIRECT.open(request, timeout=5) as response:
                answer: bytes = response.read()
                return answer
        except OSError:
            return None

    def _raise_from_log(self, what: str) -> None:
        tail = self.log_tail(20)
        if _BIND_FAILURE.search(tail):
            ports = ", ".join(f"{n} {p}" for n, p in self._ports.items())
            raise PortInUse(
                f"Triton could not bind its ports ({ports} on {self.host}): pass free ports "
                f"or omit them to pick free ones; log {self.log_path}"
            )
        failed = dict(_LOAD_FAILURE.findall(tail))
        if failed:
            raise self._load_failure(failed)
        raise ServeError(f"{what}; log {self.log_path}, last lines:\n{tail}")


def per_model_lines(failed: dict[str, str]) -> str:
    """One line per model and its reason, each starting a new line."""
    return "".join(f"\n  {name}: {first_reason_line(reason)}" for name, reason in sorted(failed.items()))


def _models(names: dict[str, str]) -> str:
    return f"{len(names)} model{'s' if len(names) > 1 else ''}"


def first_reason_line(reason: str) -> str:
    """Python backend reasons carry a traceback (escaped as "\\n" in the log): the first line says it."""
    return reason.replace("\\n", "\n").strip().split("\n")[0] or "no reason given"


def _stub_python_path() -> list[str]:
    """The project and this interpreter's import path, so the backend stub (a separate, embedded
    Python) imports `tritonstack.serve.batching`, numpy, onnxruntime and torch from the same places we do.
    The standard library is left out: the stub has its own, and mixing two patch releases' is unsafe."""
    stdlib = tuple(os.path.realpath(p) + os.sep for p in {sys.base_prefix, sys.base_exec_prefix})
    # The folder holding the `tritonstack` package (not resolved: its subpackages may be links).
    project = str(Path(tritonstack.__file__).parent.parent)
    entries = [project]
    for entry in filter(os.path.isdir, sys.path):
        real = os.path.realpath(entry)
        if "site-packages" in real or not real.startswith(stdlib):
            entries.append(real)
    return list(dict.fromkeys(entries))


class ExternalServer:
    """A Triton server that someone else runs, reached at `url` ("host:port", gRPC)."""

    def __init__(self, url: str) -> None:
        self.grpc_url = url.removeprefix("grpc://")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with grpcclient.InferenceServerClient(self.grpc_url) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(InferenceServerException):
                    if client.is_server_ready():
                        return
                time.sleep(_POLL_S)
        raise ServeError(f"no ready Triton server at {self.grpc_url} after {timeout:.0f} s: is it running?")


@contextlib.contextmanager
def running_server(repository: Path, external: str | None = None) -> Iterator[str]:
    """The gRPC address of a Triton serving `repository`: the external one at `external`
    (HOST:PORT, waited for until ready), else the embedded one, started here and stopped after."""
    if external:
        server = ExternalServer(external)
        server.wait_ready()
        yield server.grpc_url
        return
    with TritonServer(repository) as embedded:
        yield embedded.grpc_url
