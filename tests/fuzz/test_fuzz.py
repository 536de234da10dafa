"""The fuzz harnesses in the test suite: every corpus file and every saved finding replayed in plain
Python (no atheris), and each harness run for a bounded time (about 25 s each) under atheris.

A finding of a bounded run fails the test with the crashing input's path: fix it, then keep the
input as a regression (tests/fuzz/regressions/<harness>/), replayed here from then on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kvmgpu_wire.protocol import Op  # noqa: E402

import fuzz_channel  # noqa: E402
import fuzz_protocol  # noqa: E402

HARNESSES = {"protocol": fuzz_protocol.one_input, "channel": fuzz_channel.one_input}
RUN_SECONDS = int(os.environ.get("KVMGPU_FUZZ_SECONDS") or 25)


def inputs():
    for harness in HARNESSES:
        for kind in ("corpus", "regressions"):
            folder = HERE / kind / harness
            for path in sorted(folder.iterdir()) if folder.is_dir() else ():
                yield pytest.param(harness, path, id=f"{kind}/{harness}/{path.name}")


@pytest.mark.parametrize("harness, path", list(inputs()))
def test_replay(harness, path):
    """Each saved input goes through its harness (its checks included) without a finding."""
    HARNESSES[harness](path.read_bytes())


def test_the_corpus_is_there():
    for harness in HARNESSES:
        assert len(list((HERE / "corpus" / harness).iterdir())) >= 10, \
            f"tests/fuzz/corpus/{harness} is (nearly) empty: run tests/fuzz/make_corpus.py"


@pytest.mark.parametrize("harness", list(HARNESSES))
def test_a_bounded_run_finds_nothing(harness, tmp_path):
    pytest.importorskip("atheris", reason="atheris (the `test` extra) has no wheel for this platform")
    work, found = tmp_path / "corpus", tmp_path / "found"
    work.mkdir()
    found.mkdir()
    cmd = [sys.executable, str(HERE / f"fuzz_{harness}.py"), f"-max_total_time={RUN_SECONDS}",
           "-timeout=10", "-rss_limit_mb=2048", f"-artifact_prefix={found}/", str(work),
           str(HERE / "corpus" / harness)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_SECONDS + 120)
    crashes = sorted(str(p) for p in found.iterdir())
    if run.returncode or crashes:
        tail = "\n".join(run.stderr.splitlines()[-60:])
        pytest.fail(f"fuzz_{harness} found {crashes or 'a failure'} (exit {run.returncode}); replay it "
                    f"with `python tests/fuzz/fuzz_{harness}.py INPUT`, fix it and keep the input in "
                    f"tests/fuzz/regressions/{harness}/\n{tail}")
    assert "Done" in run.stderr, run.stderr[-2000:]


# --- the checks themselves catch what they are for --------------------------------------------

def _corpus(harness: str, name: str) -> bytes:
    return (HERE / "corpus" / harness / name).read_bytes()


def test_a_free_that_keeps_its_quota_is_caught(monkeypatch):
    from kvmgpu.worker import dispatch

    def mem_free(vg, s, r, call):  # forgets vg.quota.release
        s.drop_range(r.dptr)
        vg.backend.mem_free(r.dptr)
        return dispatch.OK
    monkeypatch.setitem(dispatch.HANDLERS, Op.MEM_FREE, mem_free)
    with pytest.raises(AssertionError, match="quota in use"):
        fuzz_channel.one_input(_corpus("channel", "op-mem_free"))


def test_a_call_left_unanswered_is_caught(monkeypatch):
    from kvmgpu.worker import channel
    real = channel.dispatch
    monkeypatch.setattr(channel, "dispatch",
                        lambda vg, s, call: None if call.op == Op.MEM_GET_INFO else real(vg, s, call))
    with pytest.raises(AssertionError, match="1 answers due, 0 came"):
        fuzz_channel.one_input(_corpus("channel", "op-mem_get_info"))


def test_a_hot_path_that_decodes_otherwise_is_caught(monkeypatch):
    real = fuzz_protocol.decode

    def skewed(data, mailbox, pieces, fast, repeats=None):  # the hot path loses a message
        events, error = real(data, mailbox, pieces, fast, repeats)
        return (events[:-1], error) if fast and events else (events, error)
    monkeypatch.setattr(fuzz_protocol, "decode", skewed)
    with pytest.raises(AssertionError, match="hot paths decoded differently"):
        fuzz_protocol.one_input(_corpus("protocol", "driver-calls-000"))
