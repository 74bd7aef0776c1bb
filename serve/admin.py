"""Which of Triton's APIs a server reachable from other hosts answers.

Bound to anything but loopback, the embedded Triton keeps every API that changes the server or
reaches into another caller's data off the network: gRPC answers inference, health, metadata,
model config and statistics, refuses the `ADMIN_PROTOCOLS`, and HTTP listens on loopback only.
On loopback everything stays open: whoever can reach it is already on the host.

Triton 2.51 cannot turn a gRPC protocol off; `--grpc-restricted-protocol` only admits requests
carrying a given header and value, and takes both on its command line, where `ps` shows them to
every local user: a key there would be a key for everyone on the host. So the admin protocols are
restricted to a header whose name has upper-case letters, which HTTP/2 forbids in header names
(RFC 9113 section 8.2.1): gRPC clients refuse to send it and Triton's gRPC server rejects a request
that carries it, so no request can match and the command line holds nothing secret.
"""

from __future__ import annotations

import ipaddress

# model-repository: load, unload (any layout on the server's disk, in explicit mode) and the index;
# shared-memory: map a region by key, which another process may own; trace and logging: settings
# that include files the server writes to.
ADMIN_PROTOCOLS = ("model-repository", "shared-memory", "trace", "logging")
OPEN_PROTOCOLS = ("health", "metadata", "inference", "model-config", "statistics")
# The header that a deployment with a key from a Kubernetes Secret checks (serve/deploy).
ADMIN_HEADER = "tritonstack-admin-key"
_UNSENDABLE_HEADER = "Closed-Beyond-Loopback"


def closed_admin_args() -> list[str]:
    """Triton's flags that refuse the admin protocols to every gRPC request."""
    return [f"--grpc-restricted-protocol={','.join(ADMIN_PROTOCOLS)}:{_UNSENDABLE_HEADER}=closed"]


def is_loopback(host: str) -> bool:
    """Whether `host` binds loopback only (`localhost`, 127.0.0.0/8, ::1); "" and 0.0.0.0 do not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
