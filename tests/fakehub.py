"""A real local HTTP server answering the few Hugging Face Hub endpoints that downloads use.

- ``HEAD``/``GET /{owner}/{name}/resolve/{revision}/{filename}``: the file, with the headers
  huggingface_hub requires (``X-Repo-Commit``, ``ETag``, ``Content-Length``); a missing file,
  revision or repo answers 404 with the Hub's ``X-Error-Code``.
- ``GET /api/models/{owner}/{name}[/revision/{revision}]``: ``{"id", "sha", "siblings"}``.

Every request is recorded in ``requests`` as ``(method, path)``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- content ----------------------------------------------------------------------------

    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Publish ``files`` as the ``main`` revision of ``repo_id``; returns its commit hash."""
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
        self.repos[repo_id] = dict(files)
        self.commits[repo_id] = digest.hexdigest()
        return self.commits[repo_id]

    def downloads(self, filename: str | None = None) -> list[str]:
        """Paths of the GET requests for files (optionally of one file name)."""
        return [
            path
            for method, path in self.requests
            if method == "GET"
            and "/resolve/" in path
            and (filename is None or path.endswith("/" + filename))
        ]

    # ---- server -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, with_body=False)

            def do_GET(self) -> None:
                hub._answer(self, with_body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- request handling -------------------------------------------------------------------

    def _answer(self, handler: BaseHTTPRequestHandler, *, with_body: bool) -> None:
        path = urlsplit(handler.path).path
        self.requests.append((handler.command, path))
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if len(parts) >= 5 and parts[2] == "resolve":
            self._resolve(handler, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), with_body)
        elif len(parts) in (4, 6) and parts[:2] == ["api", "models"]:
            revision = parts[5] if len(parts) == 6 and parts[4] == "revision" else "main"
            self._info(handler, "/".join(parts[2:4]), revision)
        else:
            self._send(handler, 404, b"", {"X-Error-Code": "RepoNotFound"}, with_body)

    def _commit_for(self, repo_id: str, revision: str) -> str | None:
        commit = self.commits[repo_id]
        return commit if revision in ("main", commit) else None

    def _resolve(
        self,
        handler: BaseHTTPRequestHandler,
        repo_id: str,
        revision: str,
        filename: str,
        with_body: bool,
    ) -> None:
        if repo_id not in self.repos:
            self._send(
                handler, 404, b"Repository not found", {"X-Error-Code": "RepoNotFound"}, with_body
            )
            return
        commit = self._commit_for(repo_id, revision)
        if commit is None:
            self._send(
                handler, 404, b"Revision not found", {"X-Error-Code": "RevisionNotFound"}, with_body
            )
            return
        data = self.repos[repo_id].get(filename)
        if data is None:
            headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}
            self._send(handler, 404, b"Entry not found", headers, with_body)
            return
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Content-Type": "application/octet-stream",
        }
        self._send(handler, 200, data, headers, with_body)

    def _info(self, handler: BaseHTTPRequestHandler, repo_id: str, revision: str) -> None:
        if repo_id not in self.repos:
            self._send(handler, 404, b"{}", {"X-Error-Code": "RepoNotFound"}, True)
            return
        commit = self._commit_for(repo_id, revision)
        if commit is None:
            self._send(handler, 404, b"{}", {"X-Error-Code": "RevisionNotFound"}, True)
            return
        body = json.dumps(
            {
                "id": repo_id,
                "sha": commit,
                "siblings": [{"rfilename": n} for n in sorted(self.repos[repo_id])],
            }
        ).encode()
        self._send(handler, 200, body, {"Content-Type": "application/json"}, True)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str],
        with_body: bool,
    ) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if with_body:
            handler.wfile.write(body)
