"""GPU tests: skipped where there is no cuda.bindings or no working driver (CI has no GPU)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PTX = ROOT / "tests" / "kernels" / "kernels.ptx"
WORKER = ("import sys; from kvmgpu.sizes import parse_size; "
          "from kvmgpu.worker.server import WorkerConfig, serve; a = sys.argv[1:]; "
          "serve(WorkerConfig(backend='cuda', gmem=parse_size(a[0], 'gmem'), socket=a[1], shm=a[2], "
          "region_size=parse_size(a[3], 'region'), vm=a[4], compute=int(a[5]), compute_mode=a[6], "
          "stats_file=a[7] if len(a) > 7 else None))")
RESULTS = os.environ.get("KVMGPU_RESULTS")  # where run_on_h200.sh wants figures written


def _gpu_reason() -> str | None:
    try:
        from cuda.bindings import driver as cu
    except Exception as e:  # noqa: BLE001 - any import failure means: no GPU tests here
        return f"cuda.bindings cannot be imported: {e}"
    try:
        err, = cu.cuInit(0)
    except Exception as e:  # noqa: BLE001 - no driver library at all
        return f"no NVIDIA driver: {e}"
    if err:
        return f"cuInit failed: {err}"
    return None


_REASON = _gpu_reason()


def pytest_collection_modifyitems(config, items):
    if _REASON is None:
        return
    skip = pytest.mark.skip(reason=_REASON)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class LoopbackVM:
    """A worker process in loopback mode (the cuda backend): the host side of one VM."""

    def __init__(self, tmp: Path, name: str, gmem: str = "4G", compute: int = 100,
                 mode: str = "share", region: str = "256M"):
        self.name = name
        self.socket = str(tmp / f"{name}.sock")
        self.shm = f"/dev/shm/kvmgpu-test-{name}-{os.getpid()}"
        self.stats = str(tmp / f"{name}.stats.json")  # the worker's counters (gpu_seconds charged)
        self.log = open(tmp / f"{name}.log", "w+")
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'guest-agent'}:{ROOT}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, gmem, self.socket, self.shm, region, name, str(compute), mode,
             self.stats],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{self.logtext()}")
            time.sleep(0.05)

    @property
    def env(self) -> dict:
        return {**os.environ, "KVMGPU_SOCKET": self.socket, "KVMGPU_SHM": self.shm,
                "PYTHONPATH": f"{ROOT / 'guest-agent'}:{ROOT}"}

    def guest(self, *args: str) -> subprocess.Popen:
        """A guest program (tests/gpu/guest_task.py) talking to this VM's worker."""
        return subprocess.Popen([sys.executable, str(Path(__file__).with_name("guest_task.py")), *args],
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def logtext(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for p in (self.socket, self.shm):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


@pytest.fixture
def vms(tmp_path):
    started: list[LoopbackVM] = []

    def start(name, **kw):
        vm = LoopbackVM(tmp_path, name, **kw)
        started.append(vm)
        return vm
    yield start
    for vm in started:
        vm.stop()


@pytest.fixture
def ptx() -> bytes:
    return PTX.read_bytes()


@pytest.fixture
def record():
    """record(name, dict): print figures and, under run_on_h200.sh, keep them in results.json."""
    import json

    def rec(name, data):
        print(f"\n{name}: {json.dumps(data)}")
        if RESULTS:
            path = Path(RESULTS) / "gpu_tests.json"
            old = json.loads(path.read_text()) if path.exists() else {}
            old[name] = data
            path.write_text(json.dumps(old, indent=1))
    return rec
