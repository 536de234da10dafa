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
