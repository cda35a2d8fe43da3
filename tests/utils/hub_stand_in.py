"""A stand-in for the Hugging Face Hub on 127.0.0.1, for end-to-end tests of push and pull without internet.

It answers the part of the Hub's HTTP API that huggingface_hub 2.x and transformers call to create a repo or a
branch, validate a model card, commit files, read repo metadata, list a tree and download files. Every file is
announced as a "regular" upload and travels base64-encoded inside the commit request, so no LFS or Xet transfer is
ever attempted (and none is tested). Repos live in memory with one snapshot per commit, so every commit stays
resolvable by its sha.

Bounded by construction: it listens on 127.0.0.1 only, each connection has a socket timeout, request bodies are
capped, and the server stops itself after `max_requests` requests or `lifetime_s` seconds, whichever comes first.
"""

import base64
import hashlib
import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

INVALID_TOKEN = "Invalid credentials in Authorization header"  # the Hub's words, which huggingface_hub recognises


def git_blob_oid(content: bytes) -> str:
    """The git object id of a file: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubReply(Exception):
    """An error answer: HTTP status, the Hub's `X-Error-Code` (when it sends one) and a message."""

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None,
                 extra: dict | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code
        self.headers, self.extra = headers or {}, extra or {}


@dataclass
class Repo:
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # "main", branches, "refs/pr/N" -> commit sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> {path: content}
    messages: dict[str, str] = field(default_factory=dict)  # commit sha -> commit summary
    pull_requests: int = 0


class HubStandIn:
    """An in-memory Hub serving on 127.0.0.1 from a background thread; use it as a context manager.

    tokens: {token: user name}; a request carrying any other token gets the Hub's 401, and writes need a token.
    requests: every (method, path) received, in order, for tests to inspect.
    """

    def __init__(self, tokens: dict[str, str], max_requests: int = 2000, lifetime_s: float = 300.0,
                 max_body_bytes: int = 64 << 20):  # fmt: skip
        self.tokens = tokens
        self.max_requests, self.lifetime_s, self.max_body_bytes = max_requests, lifetime_s, max_body_bytes
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._commit_counter = itertools.count()
        self._server = None
        self._stop_lock, self._stopped = threading.Lock(), False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._watchdog = threading.Timer(self.lifetime_s, self.stop)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def stop(self):
        """Stop serving and close the listening socket; safe to call more than once, from any thread but a
        request handler's (handlers call it through a new thread)."""
        with self._stop_lock:  # the watchdog and the test may both call it; whoever comes second finds it done
            if self._stopped:
                return
            self._stopped = True
            self._watchdog.cancel()
            self._server.shutdown()
            self._server.server_close()

    # --- the API -------------------------------------------------------------------------------------------------

    def answer(self, method: str, raw_path: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        """(status, headers, body) for one request."""
        url = urlsplit(raw_path)
        segments = [unquote(s) for s in url.path.strip("/").split("/")]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            user = self._user(headers)
            with self._lock:
                try:
                    return self._route(method, segments, query, user, body)
                except (ValueError, KeyError, TypeError) as error:  # a malformed body: JSON, ndjson or base64
                    raise HubReply(400, f"malformed request: {error!r}") from error
        except HubReply as reply:
            reply_headers = {**reply.headers, "X-Error-Message": reply.message}
            if reply.error_code:
                reply_headers["X-Error-Code"] = reply.error_code
            return reply.status, reply_headers, _json({"error": reply.message, **reply.extra})

    def _route(self, method, segments, query, user, body):
        if method == "POST" and segments == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body), user)
        if method == "POST" and segments == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body))
        if segments[:2] == ["api", "models"] and len(segments) >= 4:
            repo_id, action, rest = "/".join(segments[2:4]), segments[4:5], segments[5:]
            repo = self._repo(repo_id, user)
            if method == "GET" and action in ([], ["revision"]):
                return self._model_info(repo_id, repo, "/".join(rest) or "main")
            if method == "GET" and action == ["tree"] and rest:
                return self._tree(repo, rest[0], "/".join(rest[1:]), query.get("recursive") in ("1", "true", "True"))
            if method == "POST" and action == ["preupload"] and rest:
                _require_writer(user)
                return self._preupload(repo, rest[0], json.loads(body))
            if method == "POST" and action == ["commit"] and rest:
                _require_writer(user)
                return self._commit(repo_id, repo, rest[0], body, create_pr=query.get("create_pr") == "1")
            if method == "POST" and action == ["branch"] and rest:
                _require_writer(user)
                return self._create_branch(repo, "/".join(rest), json.loads(body or b"{}"))
        if method in ("GET", "HEAD") and len(segments) >= 5 and segments[2] == "resolve":
            repo = self._repo("/".join(segments[:2]), user)
            return self._resolve(repo, segments[3], "/".join(segments[4:]), with_body=method == "GET")
        raise HubReply(404, f"no route for {method} /{'/'.join(segments)} in the stand-in")

    def _user(self, headers) -> str | None:
        authorization = headers.get("Authorization")
        if not authorization:
            return None
        token = authorization.removeprefix("Bearer ")
        if token not in self.tokens:
            raise HubReply(401, INVALID_TOKEN)
        return self.tokens[token]

    def _repo(self, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and user is None):  # the Hub does not reveal private repos to strangers
            raise HubReply(404, "Repository not found", "RepoNotFound")
        return repo

    def _resolve_revision(self, repo: Repo, revision: str) -> str:
        sha = repo.refs.get(revision, revision)
        if sha not in repo.commits:
            raise HubReply(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def _create_repo(self, payload, user):
        _require_writer(user)
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        url = f"{self.endpoint}/{repo_id}"
        if repo_id in self.repos:  # huggingface_hub reads the url from this answer when it accepts an existing repo
            raise HubReply(409, "You already created this model repo", extra={"url": url})
        repo = self.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
        self._add_commit(repo, "main", {".gitattributes": b""}, "initial commit")  # the Hub's first commit has one too
        return 200, {}, _json({"url": url, "name": repo_id})

    def _validate_yaml(self, payload):
        content = payload["content"]
        if content.startswith("---\n"):
            try:
                yaml.safe_load(content[4 : content.index("\n---", 4)])
            except (ValueError, yaml.YAMLError) as error:
                raise HubReply(400, f"Invalid metadata: {error}") from error
        return 200, {}, _json({"errors": [], "warnings": []})

    def _model_info(self, repo_id, repo, revision):
        sha = self._resolve_revision(repo, revision)
        files = repo.commits[sha]
        info = {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private, "tags": [],
                "siblings": [{"rfilename": path, "size": len(files[path])} for path in sorted(files)]}  # fmt: skip
        return 200, {}, _json(info)

    def _tree(self, repo, revision, folder, recursive):
        files = repo.commits[self._resolve_revision(repo, revision)]
        prefix = f"{folder}/" if folder else ""
        entries = {}
        for path in sorted(p for p in files if p.startswith(prefix)):
            child = path[len(prefix) :].split("/")[0]
            if recursive or child == path[len(prefix) :]:
                entries[path] = {
                    "type": "file",
                    "path": path,
                    "size": len(files[path]),
                    "oid": git_blob_oid(files[path]),
                }
            else:
                entries[prefix + child] = {"type": "directory", "path": prefix + child, "oid": "0" * 40, "size": 0}
        if folder and not entries:
            raise HubReply(404, f"{folder} does not exist at {revision}", "EntryNotFound")
        return 200, {}, _json(list(entries.values()))

    def _preupload(self, repo, revision, payload):
        files = repo.commits[self._resolve_revision(repo, revision)]
        answer = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_oid(files[f["path"]]) if f["path"] in files else None}
            for f in payload["files"]
        ]  # fmt: skip
        return 200, {}, _json({"files": answer})

    def _commit(self, repo_id, repo, revision, body, create_pr):
        if revision not in repo.refs:
            raise HubReply(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        parent = repo.refs[revision]
        files, summary = dict(repo.commits[parent]), None
        for line in body.decode().splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value["summary"]
                if value.get("parentCommit") not in (None, parent):
                    raise HubReply(412, f"{revision} has moved on from {value['parentCommit']}")
            elif key == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise HubReply(400, f"the stand-in accepts inline base64 files only, not {key!r} (no LFS, no Xet)")
        if summary is None:
            raise HubReply(400, "the commit has no header line")
        target = revision
        if create_pr:
            repo.pull_requests += 1
            target = f"refs/pr/{repo.pull_requests}"
            repo.refs[target] = parent
        sha = self._add_commit(repo, target, files, summary)
        pr_url = f"{self.endpoint}/{repo_id}/discussions/{repo.pull_requests}" if create_pr else None
        answer = {"success": True, "commitOid": sha, "commitUrl": f"{self.endpoint}/{repo_id}/commit/{sha}",
                  "pullRequestUrl": pr_url}  # fmt: skip
        return 200, {}, _json(answer)

    def _create_branch(self, repo, branch, payload):
        if branch in repo.refs:
            raise HubReply(409, f"Reference {branch} already exists")
        repo.refs[branch] = self._resolve_revision(repo, payload.get("startingPoint") or "main")
        return 200, {}, _json({})

    def _resolve(self, repo, revision, path, with_body):
        sha = self._resolve_revision(repo, revision)
        files = repo.commits[sha]
        if path not in files:  # the commit header lets the client remember the absence for this commit
            raise HubReply(404, f"{path} does not exist at {revision}", "EntryNotFound", {"X-Repo-Commit": sha})
        content = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_oid(content)}"', "Content-Length": str(len(content)),
                   "Content-Type": "application/octet-stream"}  # fmt: skip
        return 200, headers, content if with_body else b""

    def _add_commit(self, repo: Repo, ref: str, files: dict[str, bytes], message: str) -> str:
        seed = json.dumps(
            [next(self._commit_counter), repo.refs.get(ref), message, sorted(map(git_blob_oid, files.values()))]
        )
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[sha], repo.messages[sha], repo.refs[ref] = files, message, sha
        return sha


def _require_writer(user: str | None):
    if user is None:
        raise HubReply(401, "You must be authenticated to write to a repo")


def _json(value) -> bytes:
    return json.dumps(value).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive thread outlives a test
    timeout = 10  # seconds a client may stall before its connection is dropped

    def do_GET(self):
        self._serve("GET")

    def do_HEAD(self):
        self._serve("HEAD")

    def do_POST(self):
        self._serve("POST")

    def _serve(self, method):
        hub = self.server.hub
        hub.requests.append((method, self.path))
        if len(hub.requests) > hub.max_requests:
            threading.Thread(target=hub.stop, daemon=True).start()
            status, headers, body = 503, {}, _json({"error": "the stand-in reached its request limit"})
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > hub.max_body_bytes:
                status, headers, body = 413, {}, _json({"error": "request body too large for the stand-in"})
            else:
                status, headers, body = hub.answer(method, self.path, self.headers, self.rfile.read(length))
        self.send_response(status)
        headers = {"Content-Type": "application/json", **headers}
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):  # the tests read `requests` instead of a log on stderr
        pass
