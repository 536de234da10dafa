"""VMs in loopback for the benchmarks that run programs on the native guest library: the library
built, workers started (one per VM, as bench/gpu/libcuda_gpu.sh and tests/gpu start them), and the
command prefix and environment that make a program a guest (the GPU hidden from it, libcuda.so.1
first on the loader's path, KVMGPU_SOCKET / KVMGPU_SHM). Used by bench/gpu/torch_shares.py and
bench/gpu/cupy_bench.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WITHOUT_GPU = Path(__file__).with_name("without_gpu.sh")
WORKER = ("import sys\nfrom kvmgpu.worker.server import WorkerConfig, serve\na = sys.argv[1:]\n"
          "serve(WorkerConfig(backend=a[0], gmem=int(a[1]), socket=a[2], shm=a[3], region_size=int(a[4]), vm=a[5],"
          " compute=int(a[6]), compute_mode=a[7], stats_file=a[8]))")


def stop_on_sigterm() -> None:
    """SIGTERM (`timeout`) as SystemExit, so that the workers are stopped on the way out."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def build_library(dest: Path) -> Path:
    """libcuda.so.1 and libnvidia-ml.so.1 built into DEST (guest-agent/libcuda/build.py)."""
    r = subprocess.run([sys.executable, str(ROOT / "guest-agent" / "libcuda" / "build.py"), str(dest)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"cannot build the guest library into {dest}:\n{r.stdout}{r.stderr}")
    return dest


def hide_gpu() -> list[str]:
    """The command prefix that runs a program without the GPU (as in a VM): its /dev/nvidia* are
    /dev/null in a mount namespace where this user may make one, else CUDA_VISIBLE_DEVICES=."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-m", str(WITHOUT_GPU)]
    return ["env", "CUDA_VISIBLE_DEVICES="]


def gpu_name() -> str:
    if not shutil.which("nvidia-smi"):
        return "no GPU"
    lines = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True).stdout.strip().splitlines()
    return lines[0] if lines else "no GPU"


def begin(out: Path | None, prefix: str, backend: str) -> tuple[Path, Path, list[str], str]:
    """A benchmark's start: SIGTERM stops it cleanly, its output directory (`out`, else a new one),
    the guest library built there, how guests run without the GPU, and the GPU's name, said in one
    line. (out, lib, hide, gpu)."""
    stop_on_sigterm()
    out = out or Path(tempfile.mkdtemp(prefix=prefix))
    out.mkdir(parents=True, exist_ok=True)
    lib = build_library(out / "lib")
    hide = hide_gpu()
    gpu = gpu_name()
    print(f"== {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {gpu} ({backend} backend); the guests run "
          f"with `{' '.join(hide)}`; results in {out}")
    return out, lib, hide, gpu


class LoopbackVM:
    """One VM's worker (`kvmgpu.worker.server.serve`) in loopback, and how to run a guest on it.
    Workers given the same COMPUTE_DIR share one GPU's compute board (KVMGPU_COMPUTE_DIR)."""

    def __init__(self, out: Path, name: str, lib: Path, *, backend: str = "cuda", compute: int = 100,
                 mode: str = "share", gmem: int = 8 << 30, region: int = 256 << 20,
                 compute_dir: Path | None = None):
        self.name, self.lib = name, lib
        self.socket = out / f"{name}.sock"
        self.shm = Path(f"/dev/shm/kvmgpu-bench-{name}-{os.getpid()}")
        self.stats_file = out / f"{name}.stats.json"
        self.log = out / f"{name}.worker.log"
        env = dict(os.environ, PYTHONPATH=f"{ROOT / 'guest-agent'}:{ROOT}")
        if compute_dir is not None:
            env["KVMGPU_COMPUTE_DIR"] = str(compute_dir)
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, backend, str(gmem), str(self.socket), str(self.shm), str(region), name,
             str(compute), mode, str(self.stats_file)],
            env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"the worker of {name} did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def guest_env(self) -> dict:
        """The environment of a guest process: this VM's channel and the library first."""
        path = os.environ.get("LD_LIBRARY_PATH")
        return dict(os.environ, KVMGPU_SOCKET=str(self.socket), KVMGPU_SHM=str(self.shm),
                    LD_LIBRARY_PATH=f"{self.lib}:{path}" if path else str(self.lib))

    def stats(self) -> dict:
        """The worker's counters as last written (at most once a second)."""
        try:
            return json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return {}

    def fresh_stats(self, timeout: float = 5.0) -> dict:
        """The counters from a write after this call (an idle worker rewrites them about once a
        second): what the VM did up to now, once its guest is idle."""
        since, deadline = time.time(), time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats.get("time", 0) > since or time.monotonic() > deadline:
                return stats
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.shm.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)
