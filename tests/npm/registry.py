"""A tiny npm registry for hermetic tests and the benchmark: packuments and tarballs served from memory.

Tarballs are built with tarfile in the layout `npm pack` writes (every file under `package/`): the same
bytes npm would get from a real registry, without a second or so of `npm pack` per package version.
"""

import base64
import gzip
import hashlib
import io
import json
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Json = Any


def tarball(name: str, version: str, files: Mapping[str, str], manifest: Mapping[str, Json]) -> bytes:
    """A package tarball: package.json plus `files`, all under package/."""
    package_json = {"name": name, "version": version, "main": "index.js", **manifest}
    entries = {"package.json": json.dumps(package_json), **files}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, text in sorted(entries.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"package/{path}")
            info.size, info.mode, info.mtime = len(data), 0o644, 499162500  # npm's fixed mtime
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


class LocalRegistry:
    """Packages published in-process, served over HTTP on 127.0.0.1; `url` is the NPM_CONFIG_REGISTRY."""

    def __init__(self) -> None:
        self.packuments: dict[str, dict[str, Json]] = {}
        self.tarballs: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.delays: dict[str, float] = {}  # path -> seconds to wait before answering (a slow registry)
        self.url = ""

    def publish(
        self,
        name: str,
        version: str,
        files: Mapping[str, str],
        dependencies: Mapping[str, str] | None = None,
        **manifest: Json,
    ) -> None:
        """Publish a version; it becomes `latest`."""
        extra = {**manifest, **({"dependencies": dict(dependencies)} if dependencies else {})}
        data = tarball(name, version, files, extra)
        path = f"/-/tarballs/{name}/{version}.tgz"
        self.tarballs[path] = data
        digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
        dist = {
            "tarball": self.url + path,
            "shasum": hashlib.sha1(data).hexdigest(),
            "integrity": f"sha512-{digest}",
        }
        packument = self.packuments.setdefault(name, {"name": name, "dist-tags": {}, "versions": {}})
        packument["versions"][version] = {"name": name, "version": version, **extra, "dist": dist}
        packument["dist-tags"]["latest"] = version

    def answer(self, path: str) -> tuple[int, bytes, str]:
        self.requests.append(path)
        if path in self.tarballs:
            return 200, self.tarballs[path], "application/octet-stream"
        packument = self.packuments.get(urllib.parse.unquote(path.lstrip("/")))
        if packument is None:
            return 404, b'{"error":"Not found"}', "application/json"
        return 200, json.dumps(packument).encode(), "application/json"


@contextmanager
def local_registry() -> Iterator[LocalRegistry]:
    registry = LocalRegistry()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            time.sleep(registry.delays.get(path, 0.0))
            status, body, kind = registry.answer(path)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")  # a newly published version shows at once
            self.end_headers()
            with suppress(OSError):  # npm gave up waiting
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    registry.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
