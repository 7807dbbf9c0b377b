"""A read-only Docker registry (HTTP API v2) on 127.0.0.1 serving one local image, for real pulls in tests.

No registry is reachable from the test machines and none is installed, so this serves what ``docker save``
writes: the image config and its layers as blobs, plus a schema-2 manifest naming them. Docker treats a
registry on 127.0.0.1 as insecure (plain HTTP) without configuration, so ``docker pull
127.0.0.1:PORT/name:tag`` works, and the daemon streams its usual pull progress events.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import docker

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def _random_layer(size: int) -> bytes:
    """A layer tar holding one file of random bytes: never present locally, so it is really downloaded."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("xw-test-pulled.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return out.getvalue()


def _blobs_from_saved(
    client: docker.DockerClient, image: str, extra_layer_bytes: int = 0
) -> tuple[dict[str, bytes], bytes]:
    """(digest -> blob, manifest) from ``docker save`` of a local image (layers stay uncompressed), plus
    one random layer of ``extra_layer_bytes`` when asked (a new image whose pull downloads something)."""
    saved = io.BytesIO(b"".join(client.images.get(image).save(named=False)))
    blobs: dict[str, bytes] = {}
    with tarfile.open(fileobj=saved) as tar:

        def read(name: str) -> bytes:
            member = tar.extractfile(name)
            assert member is not None, name
            return member.read()

        entry = json.loads(read("manifest.json"))[0]
        config = read(entry["Config"])
        layers = [read(name) for name in entry["Layers"]]

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    if extra_layer_bytes:
        layer = _random_layer(extra_layer_bytes)
        doc = json.loads(config)
        doc["rootfs"]["diff_ids"].append(digest(layer))
        doc.setdefault("history", []).append({"created_by": "xw-test: random layer"})
        config = json.dumps(doc).encode()
        layers.append(layer)

    blobs[digest(config)] = config
    for layer in layers:
        blobs[digest(layer)] = layer
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": digest(config),
        },
        # Declared gzip (what daemons expect); they detect an uncompressed tar by its bytes and accept it.
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": len(layer),
                "digest": digest(layer),
            }
            for layer in layers
        ],
    }
    return blobs, json.dumps(manifest).encode()


class LocalRegistry:
    """Serve ``image`` as ``127.0.0.1:<port>/<repository>:<tag>`` until :meth:`close`."""

    def __init__(
        self, client: docker.DockerClient, image: str, repository: str, tag: str, extra_layer_bytes: int = 0
    ) -> None:
        blobs, manifest = _blobs_from_saved(client, image, extra_layer_bytes)
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        # Daemons ask by tag, then by the digest the first answer carried.
        manifest_paths = {f"/v2/{repository}/manifests/{ref}" for ref in (tag, manifest_digest)}
        self.requests: list[str] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: bytes = b"", ctype: str = "application/octet-stream") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                if ctype == MANIFEST_TYPE:
                    self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(body).hexdigest())
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                requests.append(self.path)
                if self.path == "/v2/":
                    self._send(200, b"{}", "application/json")
                elif self.path in manifest_paths:
                    self._send(200, manifest, MANIFEST_TYPE)
                elif self.path.startswith(f"/v2/{repository}/blobs/"):
                    blob = blobs.get(self.path.rsplit("/", 1)[1])
                    self._send(200, blob) if blob is not None else self._send(404)
                else:
                    self._send(404)

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.reference = f"127.0.0.1:{self.port}/{repository}:{tag}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
