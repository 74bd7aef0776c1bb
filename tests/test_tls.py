"""TLS and admin-API protection on the real embedded Triton: a throwaway CA signs a server
certificate (openssl CLI); clients that trust the CA connect, others are refused. A server bound
beyond loopback answers admin protocols only with the generated key."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from client import AsyncTritonClient, ClientError, ServerUnavailable, TritonClient
from serve import TritonServer
from serve.tls import AdminKey, Tls, is_loopback
from tests.conftest import ServerFactory
from tests.reference_models import FRAGILE, write_fragile_model
from tritonstack.cli import main

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make certificates"),
]

X = np.ones((2, 4), np.float32)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_certificates(directory: Path) -> Tls:
    """A CA, and a server certificate it signs for 127.0.0.1 and localhost."""
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    subject = "/CN=tritonstack test CA"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", subject,
             "-keyout", ca_key, "-out", ca)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", key, "-out", csr)
    extensions = directory / "san.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "1",
             "-extfile", extensions, "-out", cert)  # fmt: skip
    return Tls(cert, key, root_cert=ca)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tls")
    write_fragile_model(root / "repo", root)
    return root / "repo"


@pytest.fixture(scope="module")
def tls_server(
    repo: Path, triton_server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    server = triton_server_factory(repo, tls=make_certificates(tmp_path_factory.mktemp("certs")))
    yield server
    server.stop()


def test_tls_client_trusting_the_ca(tls_server: TritonServer) -> None:
    assert tls_server.tls is not None
    ca = str(tls_server.tls.root_cert)
    with TritonClient(tls_server.grpc_url, ssl=True, root_certificates=ca) as triton:
        np.testing.assert_array_equal(triton.infer(FRAGILE.name, {"x": X})["y"], 2 * X)

    async def main() -> None:
        async with AsyncTritonClient(tls_server.grpc_url, ssl=True, root_certificates=ca) as aio:
            np.testing.assert_array_equal((await aio.infer(FRAGILE.name, {"x": X}))["y"], 2 * X)

    asyncio.run(main())


@pytest.mark.parametrize("ssl", [False, True], ids=["plaintext", "untrusted-ca"])
def test_tls_refuses_plaintext_and_unknown_ca(tls_server: TritonServer, ssl: bool) -> None:
    with TritonClient(tls_server.grpc_url, timeout=2.0, ssl=ssl) as triton:
        assert not triton.is_ready()
        with pytest.raises(ServerUnavailable):
            triton.infer(FRAGILE.name, {"x": X})


def test_beyond_loopback_admin_protocols_need_the_key(
    repo: Path, triton_server_factory: ServerFactory
) -> None:
    server = triton_server_factory(
        repo, host="0.0.0.0", model_control_mode="explicit", extra_args=["--load-model=*"]
    )
    try:
        assert server.admin_key is not None
        with TritonClient(server.grpc_url) as anyone:
            np.testing.assert_array_equal(
                anyone.infer(FRAGILE.name, {"x": X})["y"], 2 * X
            )  # inference is open
            with pytest.raises(ClientError, match="refused an admin call .*restricted.*headers=") as err:
                anyone.unload_model(FRAGILE.name)
            assert not isinstance(err.value, ServerUnavailable)  # refused at once, not retried
        with TritonClient(server.grpc_url, headers=server.admin_key.headers) as admin:
            admin.unload_model(FRAGILE.name)
            admin.load_model(FRAGILE.name)
            assert [m.state for m in admin.list_models()] == ["READY"]
            np.testing.assert_array_equal(admin.infer(FRAGILE.name, {"x": X})["y"], 2 * X)
    finally:
        server.stop()


def test_admin_key_policy() -> None:
    assert TritonServer(".").admin_key is None  # loopback: nothing to protect from
    assert TritonServer(".", host="0.0.0.0").admin_key is not None
    assert TritonServer(".", host="0.0.0.0", open_admin_apis=True).admin_key is None
    key = AdminKey("s3cret")
    assert key.args() == [
        "--grpc-restricted-protocol=model-repository,shared-memory:tritonstack-admin-key=s3cret"
    ]
    assert "s3cret" not in repr(key)
    assert key.headers == {"triton-grpc-protocol-tritonstack-admin-key": "s3cret"}
    assert AdminKey().value != AdminKey().value
    assert [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "", "10.0.0.5")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_serve_cli_tls_needs_cert_and_key(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--repo", str(repo), "--grpc-use-ssl", "--grpc-cert", str(repo)]) == 2
    assert "--grpc-use-ssl needs --grpc-cert and --grpc-key" in capsys.readouterr().err
