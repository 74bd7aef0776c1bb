"""Shared fixtures for tests that need a real Triton server.

Starting Triton and its Python backend stubs costs seconds, so servers are shared: a test
module builds its model repository once (in a module- or session-scoped fixture) and starts one
server for it through `triton_server_factory`:

    @pytest.fixture(scope="module")
    def server(triton_server_factory, tmp_path_factory):
        repo = tmp_path_factory.mktemp("repo")
        write_version(repo, "m_onnx", build_config(spec, Format.ONNX), {"model.onnx": path})
        server = triton_server_factory(repo)  # started, every model READY
        yield server
        server.stop()  # optional: anything still running is stopped at the end of the session

Extra keyword arguments go to `TritonServer`. Servers bind 127.0.0.1 on free ports, so modules
never collide; each server's log is kept under pytest's temporary directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tritonstack.serve import TritonServer

ServerFactory = Callable[..., TritonServer]


@pytest.fixture(scope="session")
def triton_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    servers: list[TritonServer] = []

    def start(repository: Path | str, **kwargs: Any) -> TritonServer:
        kwargs.setdefault("log_path", tmp_path_factory.mktemp("triton-log") / "triton.log")
        server = TritonServer(repository, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
