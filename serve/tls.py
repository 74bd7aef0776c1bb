"""Transport security and admin-API protection for the embedded Triton.

`Tls` turns certificate files into Triton's `--grpc-use-ssl` flags, and with `mutual` into
`--grpc-use-ssl-mutual`: only clients presenting a certificate signed by `root_cert` are served.
`AdminKey` restricts the
gRPC protocols that change or expose the server (loading and unloading models, registering
shared memory) to requests carrying a header with a secret value, through Triton's
`--grpc-restricted-protocol`: a server reachable from other hosts should not let anyone on the
network swap its models or map memory into it.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from tritonstack.errors import UsageError

# Protocols anyone able to reach the port could abuse: model-repository loads/unloads models
# (and, with explicit control, any file layout on the server's disk), shared-memory registers
# regions by key. Inference, health, metadata and statistics stay open.
ADMIN_PROTOCOLS = ("model-repository", "shared-memory")
ADMIN_HEADER = "tritonstack-admin-key"
_TRITON_HEADER_PREFIX = "triton-grpc-protocol-"


@dataclass(frozen=True)
class Tls:
    """PEM files for gRPC over TLS: the server's certificate and key, and the root certificate
    that clients' certificates must chain to, which Triton reads only for mutual TLS (`mutual`:
    a client without such a certificate is refused during the handshake)."""

    cert: Path
    key: Path
    root_cert: Path | None = None
    mutual: bool = False

    def __post_init__(self) -> None:
        if self.mutual and self.root_cert is None:
            raise UsageError("mutual TLS needs --grpc-root-cert: the CA that clients' certificates chain to")
        for flag, path in (
            ("--grpc-cert", self.cert),
            ("--grpc-key", self.key),
            ("--grpc-root-cert", self.root_cert),
        ):
            if path is not None and not Path(path).is_file():
                raise UsageError(f"{flag} {path} is not a file: pass a PEM file")

    def args(self) -> list[str]:
        args = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.cert}", f"--grpc-server-key={self.key}"]
        if self.root_cert is not None:
            args.append(f"--grpc-root-cert={self.root_cert}")
        if self.mutual:
            args.append("--grpc-use-ssl-mutual=true")
        return args


@dataclass(frozen=True)
class AdminKey:
    """A secret that admin requests carry in the `header` header; generated unless given."""

    value: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    header: str = ADMIN_HEADER

    @property
    def headers(self) -> dict[str, str]:
        """What a client passes as `headers=` to reach the restricted protocols (Triton expects
        the header under its own prefix)."""
        return {_TRITON_HEADER_PREFIX + self.header: self.value}

    def args(self) -> list[str]:
        return [f"--grpc-restricted-protocol={','.join(ADMIN_PROTOCOLS)}:{self.header}={self.value}"]


def is_loopback(host: str) -> bool:
    """Whether `host` binds loopback only (`localhost`, 127.0.0.0/8, ::1); "" and 0.0.0.0 do not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
