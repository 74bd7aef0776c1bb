"""Transport security for the embedded Triton.

`Tls` turns certificate files into Triton's `--grpc-use-ssl` flags, and with `mutual` into
`--grpc-use-ssl-mutual`: only clients presenting a certificate signed by `root_cert` are served.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tritonstack.errors import UsageError


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
