"""VMs on the H200: loopback workers (cuda backend) with guest programs in their own processes."""

import json
import time

import pytest

from kvmgpu_wire.cudefs import CUresult

pytestmark = pytest.mark.gpu

QUOTA_TASK = r"""
import json
from kvmgpu_guest import driver as cu
cu.cuInit(0); dev = cu.cuDeviceGet(0)[1]; cu.cuCtxCreate(0, dev)
free, total = cu.cuMemGetInfo()[1:]
got = []
while True:
    err, p = cu.cuMemAlloc(64 << 20)
    if err:
        break
    got.append(p)
print(json.dumps({"total": int(total), "free": int(free), "allocated": len(got) * (64 << 20),
                  "error": int(err), "devtotal": int(cu.cuDeviceTotalMem(dev)[1])}))
"""


def result(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_memory_quota_is_exact_and_per_vm(vms, record):
    import subprocess
    import sys
    a = vms("qa", gmem="1G")
    b = vms("qb", gmem="2G")
    ra = subprocess.run([sys.executable, "-c", QUOTA_TASK], env=a.env, capture_output=True, text=True, timeout=120)
    rb = subprocess.run([sys.executable, "-c", QUOTA_TASK], env=b.env, capture_output=True, text=True, timeout=120)
    qa, qb = json.loads(ra.stdout.splitlines()[-1]), json.loads(rb.stdout.splitlines()[-1])
    record("memory_quota", {"vm_1G": qa, "vm_2G": qb})
    assert qa["total"] == qa["devtotal"] == 1 << 30 and qa["free"] == 1 << 30
    assert qa["allocated"] == 1 << 30 and qa["error"] == CUresult.CUDA_ERROR_OUT_OF_MEMORY
    assert qb["total"] == 2 << 30 and qb["allocated"] == 2 << 30


def test_fault_isolation(vms, record):
    """VM A's kernel writes out of bounds: A gets CUDA_ERROR_ILLEGAL_ADDRESS; VM B, at work on the
    same GPU meanwhile, finishes with correct results; A can start again (its worker re-executes
    itself for a new context once A's last session ends: same pid, same socket and region)."""
    a, b = vms("fa"), vms("fb")
    pid = a.proc.pid
    good = b.guest("stencil", str(1 << 16), "200", "6")  # rounds of it for 6 s, each checked
    time.sleep(1.0)
    ra = result(a.guest("oob"))
    again = result(a.guest("stencil", str(1 << 16), "100"))
    rb = result(good)
    record("fault_isolation", {"A_sync": ra["sync"], "B_ok": rb["ok"], "B_rounds": rb["rounds"],
                               "B_after_A_fault_s": round(rb["end"] - ra["end"], 3),
                               "A_again_ok": again["ok"]})
    assert ra["sync"] == CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
    assert rb["ok"] and rb["end"] > ra["end"]  # B ran on, correctly, past A's fault
    assert again["ok"]
    assert a.proc.poll() is None and a.proc.pid == pid and "re-executing the worker" in a.logtext()


SPIN_NS = 200_000


def _windows(results, start, seconds):
    """GPU time each VM got in each whole second: completed spin kernels x their length."""
    out = []
    for k in range(1, int(seconds) - 1):  # skip the first and last second (start-up, stop)
        lo, hi = start + k, start + k + 1
        out.append([sum(n for t, n in r["marks"] if lo <= t < hi) * SPIN_NS / 1e9 for r in results])
    return out


@pytest.mark.parametrize("case", [
    ("share", (30, 70)), ("share", (25, 25, 25, 25)), ("limit", (50,))], ids=["share30-70", "share4x25", "limit50"])
def test_compute_share_accuracy(vms, record, case):
    mode, percents = case
    seconds = 5.0
    machines = [vms(f"c{i}", compute=p, mode=mode) for i, p in enumerate(percents)]
    start = time.monotonic() + 3.0
    guests = [m.guest("spin", str(SPIN_NS), str(seconds), str(start)) for m in machines]
    results = [result(g, timeout=60) for g in guests]
    windows = _windows(results, start, seconds)
    if mode == "limit":
        achieved = [[w[0] for w in windows]]  # share of the whole GPU's time
        targets = [percents[0] / 100]
    else:
        achieved = [[w[i] / sum(w) for w in windows] for i in range(len(percents))]
        targets = [p / 100 for p in percents]
    worst = max(abs(a - t) for series, t in zip(achieved, targets) for a in series)
    time.sleep(1.2)  # the workers rewrite their stats every second
    charged = [json.loads(open(m.stats).read())["compute"]["gpu_seconds"] for m in machines]
    kernels = [sum(n for _, n in r["marks"]) * SPIN_NS / 1e9 for r in results]
    record(f"compute_{mode}_{'-'.join(map(str, percents))}", {
        "targets": targets, "achieved_per_1s_window": achieved,
        "whole_run": {"kernel_s": kernels, "charged_s": charged,  # what ran vs what the gates charged
                      "kernel_share": [round(k / sum(kernels), 4) for k in kernels],
                      "charged_share": [round(c / sum(charged), 4) for c in charged]},
        "gpu_busy_per_window": [sum(w) for w in windows], "worst_error_pp": round(100 * worst, 2)})
    assert worst <= 0.03
