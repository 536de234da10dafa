"""Every forwarded driver call, on random data, against a real sim worker: the buffers come back as
the sim computes them, errors come back with CUDA's names. (tests/gpu/test_forwarded.py runs the
same program natively and forwarded on a GPU and compares the two.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
sys.path.insert(0, str(KERNELS))
import driver_calls  # noqa: E402


def test_every_forwarded_call_on_random_data(worker):
    env = {**os.environ, "KVMGPU_SOCKET": worker.socket, "KVMGPU_SHM": worker.shm}
    proc = subprocess.run([sys.executable, str(KERNELS / "driver_calls.py"), "forwarded", "7"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(proc.stdout)
    assert "failed" not in got, got
    want = driver_calls.expected_on_sim(7)
    assert {k: got[k] for k in want} == want
    assert got["warp_size"] == 32 and got["global_size"] == 4 and got["global_back"] == 0.5
    assert all(got[k] is True for k in ("driver_version_ok", "device_count_ge_1", "name_nonempty",
                                        "total_mem_positive", "current_is_primary", "free_le_total",
                                        "elapsed_nonneg"))
    assert got["stream_query"] == got["event_query"] == "CUDA_SUCCESS"
    assert got["missing_function"] == "CUDA_ERROR_NOT_FOUND"
    assert got["free_bad_pointer"] == "CUDA_ERROR_INVALID_VALUE"
    assert got["alloc_past_total"] == "CUDA_ERROR_OUT_OF_MEMORY"
    assert got["error_string"] == "out of memory"
