"""Who may publish to the local nginx-rtmp ingest: only the channel's own feeder.

Without this check anyone on the host could publish unlabelled video on `live/<channel>` while a feeder
restarts, and the relays would forward it to the channel's destinations. nginx-rtmp asks, before it accepts a
publish, an HTTP endpoint (`on_publish`) over a Unix socket in the ingest's 0700 work directory; the streamer
answers it from `PublishTokens`:
- each feeder start gets a fresh one-time token for its channel (`issue`), sent as `?token=` on the publish URL;
- nginx-rtmp passes the stream name and that argument to `on_publish`; the token is spent by the first publish
  that shows it, and expires after TOKEN_TTL_S unused;
- in a fleet each token is bound to the channel lease's fencing token when issued, and spent only while this
  streamer still holds the channel with that token, so a streamer that lost the channel cannot publish either;
- anything else (no token, another channel's, a spent or expired one) is refused with 403, and counted.
The push ffmpeg carries the token on its command line, where other local users could read it; by then it is
being spent (the push connects within milliseconds), and nginx-rtmp refuses a second publisher on a stream that
is live. Streaming hosts should still mount /proc with hidepid=2 (README, threat model).
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import logging
import os
import re
import secrets
import socketserver
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

log = logging.getLogger("studio.streamer")

TOKEN_TTL_S = 60.0
MAX_TOKENS = 4096  # outstanding tokens kept; the oldest go first
SOCKET_NAME = "publish-auth.sock"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
SOCKET_CHARS = re.compile(r"[A-Za-z0-9_./\-]+")  # what nginx's `on_publish http://unix:PATH:/...` carries as is
SHORT_ROOT = Path("/tmp")


class PublishAuthError(RuntimeError):
    """The publish check's socket cannot be made safely; the message names the directory and why."""


def socket_path_usable(path: str) -> bool:
    """Whether a Unix socket can live at `path` and nginx's config can name it: absolute, plain characters,
    short enough for sun_path."""
    return path.startswith("/") and len(path) <= MAX_SOCKET_PATH and SOCKET_CHARS.fullmatch(path) is not None


def publish_auth_socket(data_root: Path, *, short_root: Path = SHORT_ROOT) -> Path:
    """Where the embedded ingest asks whether a publish may go ahead: data/nginx/publish-auth.sock, the ingest's
    own work directory. Where that path cannot be a socket (over 100 characters, which a deep data_dir reaches:
    a Kubernetes volume, a test's temporary folder; or characters nginx's config cannot carry) it is
    /tmp/studio-UID/publish-auth-HASH.sock, HASH from the data directory: the streamer and its ingest name the
    same one, any data_dir works, and PublishAuthServer makes that folder private to this user (or refuses)."""
    path = Path(data_root) / "nginx" / SOCKET_NAME
    if socket_path_usable(str(path)):
        return path
    digest = hashlib.sha256(os.path.abspath(data_root).encode()).hexdigest()[:16]
    return Path(short_root) / f"studio-{os.getuid()}" / f"publish-auth-{digest}.sock"


def private_dir(folder: Path) -> None:
    """Make `folder` (mode 0700) if it is missing, and check that only this user can put anything in it: a real
    directory (not a link), owned by this user, writable by no one else. A folder under /tmp that someone else
    made first could otherwise hold their own socket, answering nginx that any publish may go ahead."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = folder.lstat()
    why = ("is a link, not a directory" if stat.S_ISLNK(st.st_mode) else
           "is not a directory" if not stat.S_ISDIR(st.st_mode) else
           f"belongs to uid {st.st_uid}, not this user (uid {os.getuid()})" if st.st_uid != os.getuid() else
           f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})" if st.st_mode & 0o022 else None)
    if why:
        raise PublishAuthError(f"the publish check's socket folder {folder} {why}; remove it, or give a data_dir "
                               f"short enough for the socket to live in data/nginx (at most {MAX_SOCKET_PATH} "
                               "characters for data_dir/nginx/publish-auth.sock)")


class PublishTokens:
    """One-time publish tokens per channel, bounded and expiring; thread-safe."""

    def __init__(self, ttl_s: float = TOKEN_TTL_S, max_tokens: int = MAX_TOKENS,
                 lease_valid: Callable[[str, int], bool] | None = None) -> None:
        # token -> (channel, expires, lease token or None)
        self._tokens: OrderedDict[str, tuple[str, float, int | None]] = OrderedDict()
        self._lease_valid = lease_valid
        self._ttl, self._max = ttl_s, max_tokens
        self._lock = threading.Lock()
        self.accepted = 0
        self.refused = 0

    def issue(self, channel_id: str, lease_token: int | None = None) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = (channel_id, time.monotonic() + self._ttl, lease_token)
            while len(self._tokens) > self._max:
                self._tokens.popitem(last=False)
        return token

    def spend(self, channel_id: str, token: str) -> bool:
        """True once for a token issued for `channel_id` and not expired; it cannot be used again."""
        now = time.monotonic()
        with self._lock:
            held = self._tokens.get(token) if token else None
            ok = held is not None and hmac.compare_digest(held[0], channel_id) and held[1] > now
            if held is not None and (ok or held[1] <= now):
                del self._tokens[token]
            if ok and self._lease_valid is not None:  # the channel's lease, with the token it was issued under
                ok = held[2] is not None and self._lease_valid(channel_id, held[2])
            if ok:
                self.accepted += 1
            else:
                self.refused += 1
            return ok


def with_token(url: str, token: str) -> str:
    """`url` with `?token=` set (the RTMP publish URL of a feeder)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({"token": token})))


class _Handler(http.server.BaseHTTPRequestHandler):
    server: PublishAuthServer

    def do_POST(self) -> None:  # nginx-rtmp's notify_method is POST with a form body
        length = min(int(self.headers.get("content-length") or 0), 64 * 1024)
        self._answer(parse_qs(self.rfile.read(length).decode("latin-1")))

    def do_GET(self) -> None:
        self._answer(parse_qs(urlsplit(self.path).query))

    def _answer(self, form: dict[str, list[str]]) -> None:
        name = (form.get("name") or [""])[0]
        call = (form.get("call") or ["publish"])[0]
        ok = call == "publish" and self.server.tokens.spend(name, (form.get("token") or [""])[0])
        if not ok:
            log.warning("publish refused on live/%s from %s: no valid publish token", name[:64],
                        (form.get("addr") or ["?"])[0][:64])
        self.send_response(204 if ok else 403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:  # refusals are logged above; nothing else is worth a line
        pass


class PublishAuthServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The `on_publish` endpoint on a Unix socket (mode 0600): `with PublishAuthServer(path, tokens): ...`."""

    daemon_threads = True

    def __init__(self, path: Path, tokens: PublishTokens) -> None:
        self.path = Path(path)
        self.tokens = tokens
        private_dir(self.path.parent)
        self.path.unlink(missing_ok=True)  # a socket left by a killed streamer
        old = os.umask(0o177)
        try:
            super().__init__(str(self.path), _Handler)
        finally:
            os.umask(old)
        self._thread = threading.Thread(target=self.serve_forever, name="publish-auth", daemon=True)

    def get_request(self):
        request, _ = super().get_request()
        return request, ("unix", 0)  # BaseHTTPRequestHandler wants a (host, port) client address

    def __enter__(self) -> PublishAuthServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self.path.unlink(missing_ok=True)
