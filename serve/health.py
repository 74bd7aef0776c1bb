"""Liveness and readiness over HTTP on a server's public address, when Triton's own HTTP endpoint
listens on loopback only (serve/admin.py): load balancers and Kubernetes probe
`/v2/health/ready` there.

Each probe is asked of Triton's endpoint, so readiness fails while Triton starts and as soon as
it stops taking HTTP connections, which it does first on SIGTERM (`TritonServer.begin_drain`).
Every other path is refused: the rest of Triton's HTTP API stays on loopback.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROBES = ("/v2/health/live", "/v2/health/ready")
_UPSTREAM_TIMEOUT_S = 2.0
# Triton's endpoint on this host: never through a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HealthEndpoint:
    """Serves `PROBES` on `host:port` (bound at once) with the status Triton's HTTP endpoint at
    `upstream` ("host:port") gives them, 503 when it does not answer; closed by `close()`."""

    def __init__(self, host: str, port: int, upstream: str) -> None:
        handler = type("ProbeHandler", (_ProbeHandler,), {"upstream": upstream})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _ProbeHandler(BaseHTTPRequestHandler):
    upstream: str

    def do_GET(self) -> None:
        if self.path not in PROBES:
            self._refuse()
            return
        try:
            with _DIRECT.open(f"http://{self.upstream}{self.path}", timeout=_UPSTREAM_TIMEOUT_S) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 503  # Triton is not up, or no longer takes connections
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self._refuse()

    def _refuse(self) -> None:
        body = json.dumps(
            {"error": "beyond loopback this port answers only /v2/health/live and /v2/health/ready: use gRPC"}
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Probes come every few seconds: not logged."""
