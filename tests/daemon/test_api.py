"""The API's request parsing is strict and typed; the server and client agree over a real socket."""

import json

import pytest

from kvmgpu.daemon import api
from kvmgpu.errors import DaemonUnavailable, InvalidInput, NotFound


@pytest.mark.parametrize("line, expected", [
    (b'{"op": "status"}', api.StatusRequest()),
    (b'{"op": "vgpu", "vm": "vm01"}', api.VgpuRequest("vm01")),
    (b'{"op": "history"}', api.HistoryRequest()),
    (b'{"op": "history", "vm": "a", "limit": 3}\n', api.HistoryRequest("a", 3)),
])
def test_parses_known_requests(line, expected):
    assert api.parse_request(line) == expected


@pytest.mark.parametrize("line, code, names", [
    (b"not json", "bad-json", "not JSON"),
    (b"\xff\xfe", "bad-json", "UTF-8"),
    (b"[1, 2]", "bad-request", "list"),
    (b'{"vm": "x"}', "missing-field", "'op'"),
    (b'{"op": "reboot"}', "unknown-op", "'reboot'"),
    (b'{"op": 7}', "unknown-op", "7"),
    (b'{"op": "status", "verbose": true}', "unknown-field", "'verbose'"),
    (b'{"op": "vgpu", "vm": "a", "gpu": 0, "x": 1}', "unknown-field", "'gpu', 'x'"),
    (b'{"op": "vgpu"}', "missing-field", "'vm'"),
    (b'{"op": "vgpu", "vm": 5}', "bad-type", "must be a string, not an integer"),
    (b'{"op": "vgpu", "vm": ""}', "bad-value", "'vm'"),
    (b'{"op": "history", "limit": "5"}', "bad-type", "must be an integer, not a string"),
    (b'{"op": "history", "limit": true}', "bad-type", "not a boolean"),
    (b'{"op": "history", "limit": 1.5}', "bad-type", "not a number"),
    (b'{"op": "history", "limit": 0}', "bad-value", "from 1"),
    (b'{"op": "history", "vm": null}', "bad-type", "not null"),
])
def test_refuses_bad_requests_naming_the_problem(line, code, names):
    with pytest.raises(api.ApiError) as e:
        api.parse_request(line)
    assert e.value.code == code
    assert names in e.value.message


def test_refuses_an_overlong_request():
    with pytest.raises(api.ApiError) as e:
        api.parse_request(b'{"op": "status", "x": "' + b"a" * api.MAX_REQUEST + b'"}')
    assert e.value.code == "too-long"


def test_answer_turns_errors_into_replies():
    def handle(request):
        if isinstance(request, api.VgpuRequest):
            raise api.ApiError("not-found", f"no {request.vm}")
        if isinstance(request, api.HistoryRequest):
            raise RuntimeError("boom")
        return {"gpus": []}

    assert api.answer(b'{"op": "status"}', handle) == {"ok": True, "gpus": []}
    assert api.answer(b'{"op": "vgpu", "vm": "a"}', handle) == {
        "ok": False, "error": {"code": "not-found", "message": "no a"}}
    reply = api.answer(b'{"op": "history"}', handle)
    assert reply["ok"] is False and reply["error"]["code"] == "internal"


def test_server_and_query_over_a_socket(tmp_path):
    seen = []

    def handle(request):
        seen.append(request)
        if isinstance(request, api.VgpuRequest):
            raise api.ApiError("not-found", f"VM {request.vm!r} has no running vGPU")
        return {"gpus": [{"index": 0}], "vgpus": []}

    path = tmp_path / "daemon.sock"
    server = api.ApiServer(path, handle)
    server.start()
    try:
        assert (path.stat().st_mode & 0o777) == 0o660
        assert api.query(str(path), {"op": "status"}) == {"gpus": [{"index": 0}], "vgpus": []}
        with pytest.raises(NotFound, match="no running vGPU"):
            api.query(str(path), {"op": "vgpu", "vm": "nope"})
        with pytest.raises(InvalidInput, match="'bogus'"):
            api.query(str(path), {"op": "status", "bogus": 1})
        # a second daemon must not take the socket over
        with pytest.raises(Exception, match="another kvmgpu daemon"):
            api.ApiServer(path, handle)
        # several requests on one connection
        import socket
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            s.sendall(b'{"op":"status"}\n\n{"op":"nope"}\n')
            f = s.makefile("rb")
            assert json.loads(f.readline())["ok"] is True
            assert json.loads(f.readline())["error"]["code"] == "unknown-op"
    finally:
        server.close()
    assert not path.exists()
    assert seen[0] == api.StatusRequest()


def test_query_without_a_daemon(tmp_path):
    with pytest.raises(DaemonUnavailable, match="not running"):
        api.query(str(tmp_path / "none.sock"), {"op": "status"})


def test_a_stale_socket_is_replaced(tmp_path):
    import socket
    path = tmp_path / "daemon.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()                      # the file stays; nobody listens
    server = api.ApiServer(path, lambda r: {})
    server.start()
    try:
        assert api.query(str(path), {"op": "status"}) == {}
    finally:
        server.close()


def test_live_usage_without_a_daemon_is_none(tmp_path):
    assert api.live_usage(str(tmp_path / "none.sock"), "vm01") is None
    assert api.live_usages(str(tmp_path / "none.sock")) is None
