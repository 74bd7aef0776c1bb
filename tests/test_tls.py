"""TLS on the real embedded Triton: a throwaway CA signs a server and a
client certificate (openssl CLI); clients that trust the CA connect, others are refused. Under
mutual TLS only clients presenting a certificate from that CA are served. `tritonstack infer`
takes the same options."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import ServerFactory
from tests.reference_models import FRAGILE, write_fragile_model
from tritonstack.cli import main
from tritonstack.client import AsyncTritonClient, ServerUnavailable, TritonClient
from tritonstack.errors import UsageError
from tritonstack.serve import TritonServer
from tritonstack.serve.tls import Tls

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl CLI to make certificates"
)

X = np.ones((2, 4), np.float32)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: its certificate and key."""
    ca, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", f"/CN=tritonstack {name}", "-keyout", key, "-out", ca)  # fmt: skip
    return ca, key


def _sign(directory: Path, name: str, ca: tuple[Path, Path], extension: str = "") -> tuple[Path, Path]:
    """A key and a certificate for `name` signed by `ca`: the certificate and key."""
    cert, key, csr, extensions = (directory / f"{name}.{suffix}" for suffix in ("pem", "key", "csr", "ext"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
    extensions.write_text(extension + "\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", "1",
             "-extfile", extensions, "-out", cert)  # fmt: skip
    return cert, key


def make_certificates(directory: Path) -> Tls:
    """A CA and a server certificate it signs for 127.0.0.1 and localhost; beside them a client
    certificate from the same CA (`client.pem`, `client.key`) and one from another CA
    (`stranger.pem`, `stranger.key`)."""
    ca = _ca(directory, "ca")
    cert, key = _sign(directory, "server", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost")
    _sign(directory, "client", ca)
    _sign(directory, "stranger", _ca(directory, "other-ca"))
    return Tls(cert, key, root_cert=ca[0])


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tls")
    write_fragile_model(root / "repo", root)
    return root / "repo"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(repo: Path, triton_server_factory: ServerFactory, tls: Tls) -> Iterator[TritonServer]:
    server = triton_server_factory(repo, tls=tls)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(repo: Path, triton_server_factory: ServerFactory, tls: Tls) -> Iterator[TritonServer]:
    server = triton_server_factory(repo, tls=dataclasses.replace(tls, mutual=True))
    yield server
    server.stop()


def _identity(tls: Tls, name: str) -> dict[str, Any]:
    """Client options presenting the certificate `name` from the certificates' directory."""
    return {
        "private_key": str(tls.cert.with_name(f"{name}.key")),
        "certificate_chain": str(tls.cert.with_name(f"{name}.pem")),
    }


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


def test_mutual_tls_serves_a_client_certificate_from_the_ca(mtls_server: TritonServer, tls: Tls) -> None:
    options: dict[str, Any] = {
        "ssl": True,
        "root_certificates": str(tls.root_cert),
        **_identity(tls, "client"),
    }
    with TritonClient(mtls_server.grpc_url, **options) as triton:
        np.testing.assert_array_equal(triton.infer(FRAGILE.name, {"x": X})["y"], 2 * X)

    async def main() -> None:
        async with AsyncTritonClient(mtls_server.grpc_url, **options) as aio:
            np.testing.assert_array_equal((await aio.infer(FRAGILE.name, {"x": X}))["y"], 2 * X)

    asyncio.run(main())


@pytest.mark.parametrize("identity", [None, "stranger"], ids=["no-certificate", "other-ca"])
def test_mutual_tls_refuses_other_clients(mtls_server: TritonServer, tls: Tls, identity: str | None) -> None:
    options = _identity(tls, identity) if identity else {}
    with TritonClient(
        mtls_server.grpc_url, timeout=2.0, ssl=True, root_certificates=str(tls.root_cert), **options
    ) as triton:
        assert not triton.is_ready()
        with pytest.raises(ServerUnavailable):
            triton.infer(FRAGILE.name, {"x": X})


@pytest.mark.server  # its server fixture is chosen at run time, out of conftest's sight
@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_infer_cli_over_tls(
    request: pytest.FixtureRequest, tls: Tls, mutual: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    server: TritonServer = request.getfixturevalue("mtls_server" if mutual else "tls_server")
    identity = _identity(tls, "client") if mutual else {}
    flags = [f"--{option.replace('_', '-')}={path}" for option, path in identity.items()]
    url = server.grpc_url
    args = ["infer", FRAGILE.name, "--url", url, "--ssl", "--root-certificates", str(tls.root_cert), *flags]
    assert main([*args, "--input", "x=[[1, 2, 3, 4]]"]) == 0
    assert capsys.readouterr().out.splitlines() == ["y: float32 [1, 4]", "[[2. 4. 6. 8.]]"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--root-certificates", "ca.pem"], "root_certificates need ssl=True (--ssl)"),
        (["--ssl", "--private-key", "client.key"], "needs both private_key and certificate_chain"),
        (["--ssl", "--root-certificates", "nope.pem"], "root_certificates nope.pem is not a file"),
    ],
)
def test_infer_cli_tls_options_are_checked(
    flags: list[str],
    message: str,
    tls: Tls,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tls.cert.parent)
    assert main(["infer", FRAGILE.name, "--random", "1", *flags]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert message in line


def test_mutual_tls_options() -> None:
    with pytest.raises(UsageError, match="mutual TLS needs --grpc-root-cert"):
        Tls(Path(__file__), Path(__file__), mutual=True)
    with pytest.raises(UsageError, match="--grpc-key nope.key is not a file"):
        Tls(Path(__file__), Path("nope.key"))
    mutual = Tls(Path(__file__), Path(__file__), root_cert=Path(__file__), mutual=True).args()
    assert mutual[-2:] == [f"--grpc-root-cert={__file__}", "--grpc-use-ssl-mutual=true"]


def test_serve_cli_tls_needs_cert_and_key(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--repo", str(repo), "--grpc-use-ssl", "--grpc-cert", str(repo)]) == 2
    assert "--grpc-use-ssl needs --grpc-cert and --grpc-key" in capsys.readouterr().err
