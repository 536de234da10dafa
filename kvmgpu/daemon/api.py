"""The daemon's local API: newline-delimited JSON over a unix socket, strict and typed.

A request is one JSON object on one line, `{"op": ...}` plus that op's fields; it is parsed into a
typed request (`parse_request`) before anything runs, and anything not in the op's table (an
unknown op, an unknown or missing field, a wrong type) is an error reply that names it. Replies are
one JSON object on one line: `{"ok": true, ...}` or `{"ok": false, "error": {"code", "message"}}`.

    {"op": "status"}                            -> {"ok": true, "daemon": {...}, "gpus": [...], "vgpus": [...]}
    {"op": "vgpu", "vm": "vm01"}                -> {"ok": true, "vgpu": {...}}       (not-found if not live)
    {"op": "history", "vm": "vm01", "limit": 20} -> {"ok": true, "runs": [...]}      (vm, limit optional)

`query(config, request)` is the client the CLI uses.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

from ..errors import DaemonUnavailable, InvalidInput, KvmgpuError, NotFound, PermissionDenied

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024      # bytes in one request line
HISTORY_LIMIT_MAX = 10_000


class ApiError(Exception):
    """A request the daemon refuses; `code` is a stable word, `message` names what was wrong."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def reply(self) -> dict:
        return {"ok": False, "error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True)
class StatusRequest:
    pass


@dataclass(frozen=True)
class VgpuRequest:
    vm: str


@dataclass(frozen=True)
class HistoryRequest:
    vm: str | None = None
    limit: int = 50


Request = Union[StatusRequest, VgpuRequest, HistoryRequest]

# op -> (request class, {field: (type, required)})
_OPS: dict[str, tuple[type, dict[str, tuple[type, bool]]]] = {
    "status": (StatusRequest, {}),
    "vgpu": (VgpuRequest, {"vm": (str, True)}),
    "history": (HistoryRequest, {"vm": (str, False), "limit": (int, False)}),
}


def parse_request(line: bytes | str) -> Request:
    """One request line -> a typed request, or ApiError naming what is wrong with it."""
    if isinstance(line, bytes):
        if len(line) > MAX_REQUEST:
            raise ApiError("too-long", f"request is longer than {MAX_REQUEST} bytes")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError("bad-json", "request is not UTF-8") from None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ApiError("bad-json", f"request is not JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(obj, dict):
        raise ApiError("bad-request", f"request must be a JSON object, not {type(obj).__name__}")
    if "op" not in obj:
        raise ApiError("missing-field", "request has no 'op'; ops: " + ", ".join(sorted(_OPS)))
    op = obj.pop("op")
    if not isinstance(op, str) or op not in _OPS:
        raise ApiError("unknown-op", f"unknown op {op!r}; ops: " + ", ".join(sorted(_OPS)))
    cls, fields = _OPS[op]
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(fields)) or "none"
        raise ApiError("unknown-field", f"op {op!r} has no field(s) {', '.join(map(repr, unknown))}; "
                                        f"its fields: {allowed}")
    for name, (kind, required) in fields.items():
        if name not in obj:
            if required:
                raise ApiError("missing-field", f"op {op!r} needs field {name!r}")
            continue
        value = obj[name]
        # bool is an int in Python; JSON true is not a number here
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ApiError("bad-type", f"field {name!r} of op {op!r} must be {_JSON_TYPE[kind]}, "
                                       f"not {_json_type_of(value)}")
    request = cls(**obj)
    if isinstance(request, HistoryRequest) and not 1 <= request.limit <= HISTORY_LIMIT_MAX:
        raise ApiError("bad-value", f"field 'limit' must be from 1 to {HISTORY_LIMIT_MAX}, not {request.limit}")
    if isinstance(request, VgpuRequest) and not request.vm:
        raise ApiError("bad-value", "field 'vm' must not be empty")
    return request


_JSON_TYPE = {str: "a string", int: "an integer"}


def _json_type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {str: "a string", int: "an integer", float: "a number", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def answer(line: bytes, handle: Callable[[Request], dict]) -> dict:
    """The reply to one request line: parsed, handled, errors turned into error replies (the one
    place that happens)."""
    try:
        request = parse_request(line)
        return {"ok": True, **handle(request)}
    except ApiError as e:
        return e.reply()
    except Exception as e:  # noqa: BLE001 (a bad request must never take the daemon down)
        log.exception("API request failed")
        return ApiError("internal", f"the daemon failed on this request: {e}").reply()


class _Handler(socketserver.StreamRequestHandler):
    server: "ApiServer"

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_REQUEST + 1)
            if not line:
                return
            if len(line) > MAX_REQUEST and not line.endswith(b"\n"):
                self._send(ApiError("too-long", f"request is longer than {MAX_REQUEST} bytes").reply())
                return
            if not line.strip():
                continue
            self._send(answer(line, self.server.handle_api_request))

    def _send(self, reply: dict) -> None:
        self.wfile.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
        self.wfile.flush()


class ApiServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The API socket, served from a thread. It refuses to take over the socket of a daemon that
    still answers there; a stale socket file is replaced."""

    daemon_threads = True

    def __init__(self, path: Path | str, handle_request: Callable[[Request], dict], mode: int = 0o660,
                 group: int | None = None):
        self.path = Path(path)
        # (not `handle_request`: that is socketserver's method serving one connection)
        self.handle_api_request = handle_request
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if _answers(self.path):
                raise KvmgpuError(f"another kvmgpu daemon is serving {self.path}",
                                  "stop it first (systemctl stop kvmgpu)")
            self.path.unlink()
        old_umask = os.umask(0o177)     # the socket is never world-connectable, even for a moment
        try:
            super().__init__(str(self.path), _Handler)
        finally:
            os.umask(old_umask)
        if group is not None:
            os.chown(self.path, -1, group)
        os.chmod(self.path, mode)
        self._thread = threading.Thread(target=self.serve_forever, name="kvmgpu-api", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("API on %s", self.path)

    def close(self) -> None:
        if self._thread.is_alive():     # shutdown() waits for a serve_forever() that runs
            self.shutdown()
            self._thread.join(timeout=5)
        self.server_close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def query(config: Any, request: dict, timeout: float = 10.0) -> dict:
    """Send one request to the daemon whose socket is `config.api_socket` and return its reply
    without the "ok" key. Raises DaemonUnavailable when no daemon answers there, PermissionDenied
    when the socket may not be opened, InvalidInput / NotFound / KvmgpuError for an error reply."""
    path = str(getattr(config, "api_socket", config))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonUnavailable(f"the kvmgpu daemon is not running (no answer on {path})",
                                    "start it: systemctl start kvmgpu (or run `kvmgpu daemon`)") from None
        except PermissionError:
            raise PermissionDenied(f"may not open the kvmgpu daemon's socket {path}",
                                   "run as root") from None
        except OSError as e:
            raise DaemonUnavailable(f"cannot reach the kvmgpu daemon on {path}: {e.strerror or e}") from None
        try:
            s.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            raise DaemonUnavailable(f"the kvmgpu daemon on {path} did not answer: {e}") from None
    if not data:
        raise DaemonUnavailable(f"the kvmgpu daemon on {path} closed the connection without answering")
    reply = json.loads(data)
    if reply.pop("ok", False):
        return reply
    error = reply.get("error", {})
    code, message = error.get("code", "error"), error.get("message", "the daemon refused the request")
    if code == "not-found":
        raise NotFound(message)
    if code in ("bad-json", "bad-request", "unknown-op", "unknown-field", "missing-field", "bad-type",
                "bad-value", "too-long"):
        raise InvalidInput(f"the daemon refused the request: {message}")
    raise KvmgpuError(f"the daemon failed: {message}")


def live_usage(config: Any, vm: str) -> int | None:
    """Device memory `vm`'s worker has allocated now, in bytes, from the daemon; None when the
    daemon is not running (or may not be asked) or `vm` has no running vGPU."""
    try:
        return int(query(config, {"op": "vgpu", "vm": vm})["vgpu"]["used"])
    except (DaemonUnavailable, PermissionDenied, NotFound):
        return None


def live_usages(config: Any) -> dict[str, int] | None:
    """{vm: bytes allocated now} for every running vGPU, in one request; None without a daemon."""
    try:
        return {v["vm"]: int(v["used"]) for v in query(config, {"op": "status"})["vgpus"]}
    except (DaemonUnavailable, PermissionDenied):
        return None
