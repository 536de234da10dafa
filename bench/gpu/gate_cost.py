"""What the compute gate costs on the forwarded path: a loopback worker (cuda backend) with the gate
on and with it off (KVMGPU_COMPUTE_GATE=0), a guest timing, per call, a bare cuCtxSynchronize round
trip, an empty-kernel launch + cuCtxSynchronize, and a queued launch (1000 then one sync).
Usage (repository root, on a GPU machine): python3 bench/gpu/gate_cost.py [--json FILE]"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "guest-agent"), str(ROOT)]


def guest() -> dict:
    import ctypes

    from kvmgpu_guest import driver as cu
    cu.cuInit(0)
    cu.cuCtxCreate(0, cu.cuDeviceGet(0)[1])
    mod = cu.cuModuleLoadData((ROOT / "tests" / "kernels" / "kernels.ptx").read_bytes())[1]
    f = cu.cuModuleGetFunction(mod, b"spin")[1]
    args = ((0,), (ctypes.c_longlong,))

    def per_call(fn, n, reps=5):
        fn(n // 10)  # warm
        out = []
        for _ in range(reps):
            t = time.perf_counter()
            fn(n)
            out.append((time.perf_counter() - t) / n * 1e6)
        return round(statistics.median(out), 2)

    def syncs(n):
        for _ in range(n):
            cu.cuCtxSynchronize()

    def launch_sync(n):
        for _ in range(n):
            cu.cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, 0, args, 0)
            cu.cuCtxSynchronize()

    def launches(n):
        for _ in range(n):
            cu.cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, 0, args, 0)
        cu.cuCtxSynchronize()

    return {"sync_us": per_call(syncs, 2000), "launch_sync_us": per_call(launch_sync, 2000),
            "queued_launch_us": per_call(launches, 5000)}


def measure(gate: bool) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "gpu"))  # the GPU tests' worker command
    from conftest import WORKER
    d = Path(tempfile.mkdtemp(prefix="kvgc"))
    sock, shm = str(d / "w.sock"), f"/dev/shm/kvmgpu-gatecost-{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'guest-agent'}:{ROOT}", "KVMGPU_COMPUTE_GATE": "1" if gate else "0",
           "KVMGPU_COMPUTE_DIR": str(d)}
    w = subprocess.Popen([sys.executable, "-c", WORKER, "2G", sock, shm, "64M", "gc", "100", "share"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(sock):
            assert w.poll() is None, "worker did not start"
            time.sleep(0.05)
        r = subprocess.run([sys.executable, __file__, "guest"], env={**env, "KVMGPU_SOCKET": sock, "KVMGPU_SHM": shm},
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    finally:
        w.terminate()
        w.wait(10)


if __name__ == "__main__":
    if sys.argv[1:2] == ["guest"]:
        print(json.dumps(guest()))
        sys.exit()
    rows = {"on": [], "off": []}
    for _ in range(2):
        for gate in (True, False):
            rows["on" if gate else "off"].append(measure(gate))
    out = {k: {m: min(r[m] for r in v) for m in v[0]} for k, v in rows.items()}
    out["runs"] = rows
    print(json.dumps(out, indent=1))
    if "--json" in sys.argv:
        Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps(out, indent=1))
