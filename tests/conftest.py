"""Shared fixtures for tests that need a real Triton server (and `s3_store`: moto's S3 server).

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

A test that uses this factory, directly or through its fixtures, is marked `server` here; one
that starts Triton another way (its own `TritonServer`, a `tritonstack serve` process) carries
the mark itself. `pytest -m "not server"` then runs every test that needs no server, and a test
that starts Triton in process without the mark fails, saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tritonstack.serve import TritonServer

ServerFactory = Callable[..., TritonServer]
# Triton's own repository polling, every second (model_control_mode="poll"); `serve --watch`
# rescans with explicit model control instead (serve/supervise.py).
POLL_ARGS = ("--repository-poll-secs=1",)
SERVER_FIXTURE = "triton_server_factory"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.server)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Outside `server` tests (setup, call and teardown, module fixtures included), launching
    Triton fails the test instead."""
    if item.get_closest_marker("server") is not None:
        return (yield)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TritonServer, "_launch", _unmarked_launch)
        return (yield)


def _unmarked_launch(self: TritonServer, *_: object) -> NoReturn:
    pytest.fail(
        f"this test starts Triton (repository {self.repository}) but is not marked server: use the "
        f"{SERVER_FIXTURE} fixture or @pytest.mark.server",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 for one test module, with the bucket `tests.s3_store.BUCKET`;
    yields its endpoint (the AWS_* variables point at it meanwhile)."""
    from tests.s3_store import BUCKET, create_bucket, moto_store  # boto3: imported where a test needs it

    with moto_store(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        create_bucket(BUCKET)
        yield endpoint


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
