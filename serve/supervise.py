"""`serve`'s watch over the Triton it started, a few times a second.

- Triton gone (killed, crashed): `stop()` removes its backend processes and shared memory regions
  and `ServeError` ends `serve` with one line.
- A Python backend stub gone (killed, crashed): Triton 2.51 keeps its model READY, fails every
  request with "Stub process ... is not healthy" and never starts another. Triton reaps a stub only
  when it stops it itself, so a dead one stays a zombie in Triton's process group; its model is
  unloaded (not ready: health checks tell the truth) and loaded again, which starts a new stub.
- With `watch`, the repository is rescanned: a model directory whose files changed is loaded
  (Triton reloads only what changed, serving the old versions meanwhile), one that disappeared is
  unloaded, and a model that cannot be loaded is reported with the reason, once per change of its
  files (Triton's own polling retried it every poll, silently).

Triton must run with explicit model control, the only mode in which it loads and unloads models
on request; those requests go to its HTTP endpoint, which listens on loopback only.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from urllib.parse import quote

from tritonstack.errors import ServeError
from tritonstack.serve.repository_check import being_written, model_problem
from tritonstack.serve.server import TritonServer, first_reason_line

_STUB = b"triton_python_backend_stub"
# Triton's model control on this host: never through a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
Signature = tuple[tuple[str, int, int], ...]


class Supervisor:
    """Checks `server` every `interval` seconds and repairs what it can, saying so through
    `report` (one line per event). A remote repository is watched through `listing`: model name ->
    a value that changes whenever the model's objects do (`serve.remote`)."""

    def __init__(
        self,
        server: TritonServer,
        *,
        watch: bool,
        report: Callable[[str], None],
        interval: float = 0.5,
        listing: Callable[[], Mapping[str, Hashable]] | None = None,
    ) -> None:
        if server.model_control_mode != "explicit":
            raise ServeError("supervising Triton needs model_control_mode='explicit' to reload models")
        self.server = server
        self.watch = watch
        self.report = report
        self.interval = interval
        self._stub_models: dict[int, str] = {}  # live stubs seen: pid -> model
        self._zombies: set[int] = set()  # dead stubs seen at the last check
        self._restarted: set[int] = set()  # dead stubs whose model was reloaded
        self._signatures: dict[str, Hashable] = {}  # watch: model -> its files at the last load
        self.listing = listing

    def run_until(self, signals: Iterable[int]) -> int:
        """Check until one of `signals` (blocked by the caller) arrives, and return it; raise
        `ServeError` once Triton has exited."""
        while True:
            self.check()
            received = signal.sigtimedwait(signals, self.interval)
            if received is not None:
                return received.si_signo

    def check(self) -> None:
        code = self.server.exit_code()
        if code is not None:
            self.server.stop()
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            raise ServeError(
                f"Triton exited unexpectedly ({how}); its backend processes and shared memory are "
                f"removed; log {self.server.log_path}"
            )
        self._reload_models_of_dead_stubs()
        if self.watch:
            self._rescan()

    def _reload_models_of_dead_stubs(self) -> None:
        group = self.server.pid
        assert group is not None
        members = _process_group(group)
        members.pop(group, None)
        zombies = {pid for pid, state in members.items() if state == "Z"}
        for pid in members.keys() - zombies - self._stub_models.keys():
            model = _stub_model(pid, downloaded=self.listing is not None)
            if model is not None:
                self._stub_models[pid] = model
        # Triton reaps the stubs it stops within moments: a zombie seen twice died on its own.
        dead = (zombies & self._zombies) - self._restarted
        self._zombies = zombies
        self._stub_models = {pid: m for pid, m in self._stub_models.items() if pid in members}
        self._restarted &= zombies
        self._restarted |= dead
        for model in sorted({self._stub_models[pid] for pid in dead if pid in self._stub_models}):
            started = time.monotonic()
            self.report(f"{model}: its backend process died; reloading the model")
            error = self._control(model, "unload") or self._control(model, "load")
            if error is None:
                self.report(f"{model}: reloaded in {time.monotonic() - started:.1f} s")
            else:
                self.report(f"{model}: cannot be reloaded: {error}")

    def _rescan(self) -> None:
        models = self._models()
        for name in sorted(self._signatures.keys() - models.keys()):
            del self._signatures[name]
            error = self._control(name, "unload")
            self.report(f"{name}: removed from the repository; {error or 'unloaded'}")
        for name, (signature, model_dir) in sorted(models.items()):
            if signature is None or self._signatures.get(name) == signature:
                continue
            self._signatures[name] = signature
            problem = (model_dir and model_problem(model_dir)) or self._control(name, "load")
            self.report(f"{name}: cannot be loaded: {problem}" if problem else f"{name}: loaded")

    def _models(self) -> dict[str, tuple[Hashable | None, Path | None]]:
        """Each model in the repository: what its files look like (None while an export writes
        it) and, in a local repository, its directory."""
        if self.listing is not None:  # a remote repository: Triton reads it, we list it
            return {name: (signature, None) for name, signature in self.listing().items()}
        repo = self.server.repository
        assert isinstance(repo, Path)
        dirs = [p for p in repo.iterdir() if p.is_dir()] if repo.is_dir() else []
        return {p.name: (None if being_written(p) else _signature(p), p) for p in dirs}

    def _control(self, model: str, action: str) -> str | None:
        """Ask Triton to `action` ("load" or "unload") `model`; its reason when it refuses."""
        url = f"http://{self.server.http_url}/v2/repository/models/{quote(model, safe='')}/{action}"
        request = urllib.request.Request(url, data=b"{}")
        try:
            with _DIRECT.open(request, timeout=self.server.startup_timeout):
                return None
        except urllib.error.HTTPError as exc:
            try:
                return first_reason_line(str(json.loads(exc.read())["error"]))
            except (ValueError, KeyError, TypeError):
                return f"HTTP {exc.code} {exc.reason}"
        except OSError as exc:
            return f"Triton did not answer ({exc})"


def _process_group(group: int) -> dict[int, str]:
    """pid -> state letter ("Z": zombie) of every process in process group `group`."""
    members = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if int(pgrp) == group:
            members[int(stat.parent.name)] = state
    return members


def _stub_model(pid: int, downloaded: bool) -> str | None:
    """The model a Python backend stub serves: its first argument is the model's artifact,
    `<repository>/<model>/<version>/<file>`. None for other processes. From a remote repository
    (`downloaded`) Triton runs each model from a temporary folder (`/tmp/folderXXXXXX/<version>/
    <file>`); there the stub's ninth argument, the instance name `<model>_<group>_<instance>` under
    Triton's default group names (the exporter names no group), tells the model."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if len(argv) < 2 or not argv[0].endswith(_STUB):
        return None
    if downloaded and len(argv) > 8:
        return os.fsdecode(argv[8]).rsplit("_", 2)[0]
    return Path(os.fsdecode(argv[1])).parent.parent.name


def _signature(model_dir: Path) -> Signature | None:
    """Path, mtime and size of every file and folder under `model_dir` but hidden ones (an
    export's staging); None when they changed while being read."""
    entries = []
    try:
        for root, dirs, files in os.walk(model_dir):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in (*dirs, *(f for f in files if not f.startswith("."))):
                path = os.path.join(root, name)
                stat = os.stat(path)
                entries.append((os.path.relpath(path, model_dir), stat.st_mtime_ns, stat.st_size))
    except OSError:
        return None
    return tuple(sorted(entries))
