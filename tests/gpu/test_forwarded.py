"""Every forwarded driver call against the same call made natively, on random data, on a GPU:
tests/kernels/driver_calls.py runs once on cuda.bindings.driver and once on kvmgpu_guest.driver
(through a loopback worker on the cuda backend); everything it reports must be the same."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
PROGRAM = Path(__file__).resolve().parents[1] / "kernels" / "driver_calls.py"


def _run(which: str, seed: int, env=None) -> dict:
    proc = subprocess.run([sys.executable, str(PROGRAM), which, str(seed)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{which}: {proc.stdout}{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.mark.parametrize("seed", [1, 2])
def test_forwarded_calls_match_native(vms, record, seed):
    vm = vms(f"calls{seed}", gmem="8G")
    native = _run("native", seed)
    forwarded = _run("forwarded", seed, vm.env)
    differ = {k: (native.get(k), forwarded.get(k)) for k in set(native) | set(forwarded)
              if native.get(k) != forwarded.get(k)}
    record(f"forwarded_vs_native_seed{seed}", {"compared": len(native), "differ": differ})
    assert not differ, differ
