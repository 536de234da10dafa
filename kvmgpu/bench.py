"""`kvmgpu bench`: start a loopback worker, run the guest-side benchmark against it, print both side by side.

The guest side is `python -m kvmgpu_guest.bench` in a subprocess (a real guest process, with its
own interpreter), so the figures are those a guest program sees, minus the VM's own transport.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

KERNELS = Path(__file__).resolve().parents[1] / "tests" / "kernels" / "kernels.ptx"


def bench_command(
    backend: str = typer.Option("sim", help="worker backend: sim (development) or cuda"),
    gmem: str = typer.Option("1G", help="the vGPU's memory quota"),
    region_size: str = typer.Option("128M", help="shared region size (the session's window is all of it)"),
    kernels: str = typer.Option(str(KERNELS), help="PTX with a spin(long long) kernel"),
    launches: int = typer.Option(20000, help="queued launches per measurement"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Measure the forwarded call path: round trip, queued launch, host-to-device bandwidth."""
    tmp = tempfile.mkdtemp(prefix="kvmgpu-bench-")
    sock = os.path.join(tmp, "channel.sock")
    shm = f"/dev/shm/kvmgpu-bench-{os.getpid()}"
    log = open(os.path.join(tmp, "worker.log"), "w+")
    worker = subprocess.Popen(
        [sys.executable, "-c", "from kvmgpu.cli import main; main()", "worker", "--backend", backend,
         "--gmem", gmem, "--socket", sock, "--shm", shm, "--region-size", region_size],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if worker.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                typer.echo(f"kvmgpu bench: the worker did not start\n{log.read()}", err=True)
                raise typer.Exit(1)
            time.sleep(0.02)
        env = {**os.environ, "KVMGPU_SOCKET": sock, "KVMGPU_SHM": shm}
        argv = [sys.executable, "-m", "kvmgpu_guest.bench", "--kernels", kernels, "--launches", str(launches)]
        if json_out:
            argv.append("--json")
        raise typer.Exit(subprocess.run(argv, env=env).returncode)
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
        for path in (sock, shm):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
