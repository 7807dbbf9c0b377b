"""A minimal /healthz for a standby replica (kopf, which serves the real one, starts only on the leader).

Without it the kubelet's liveness probe would kill every standby. It answers 200 with the leader
election state and the devices.yaml state as JSON, and is shut down before kopf binds the same port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse


class StandbyHealthServer:
    def __init__(self, url: str, report: Callable[[], dict[str, Any]]) -> None:
        parsed = urlparse(url)
        self.path = parsed.path or "/healthz"
        report_fn = report
        path = self.path

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if urlparse(self.path).path != path:
                    self.send_error(404)
                    return
                data = json.dumps(report_fn()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer((parsed.hostname or "0.0.0.0", parsed.port or 80), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="standby-healthz", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
