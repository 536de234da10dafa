"""`kvmgpu bench`: start a loopback worker, run the guest-side benchmark against it, print both side by side.

The guest side is `python -m kvmgpu_guest.bench` in a subprocess (a real guest process, with its
own interpreter), so the figures are those a guest program sees, minus the VM's own transport.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from typing import Optional

import typer


def sample_kernels() -> contextlib.AbstractContextManager:
    """The sample kernels the guest agent's wheel carries (kvmgpu_guest/kernels.ptx, built from
    tests/kernels/kernels.cu): a context giving their path."""
    return resources.as_file(resources.files("kvmgpu_guest").joinpath("kernels.ptx"))


def bench_command(
    backend: str = typer.Option("sim", help="worker backend: sim (development) or cuda"),
    gmem: str = typer.Option("1G", help="the vGPU's memory quota"),
    region_size: str = typer.Option("128M", help="shared region size (the session's window is all of it)"),
    kernels: Optional[str] = typer.Option(None, help="PTX with a spin(long long) kernel "
                                          "(default: the sample kernels the guest agent carries)"),
    launches: int = typer.Option(20000, help="queued launches per measurement"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Measure the forwarded call path: round trip, queued launch, host-to-device bandwidth."""
    if kernels is None:
        with sample_kernels() as path:
            return bench_command(backend, gmem, region_size, str(path), launches, json_out)
    if not os.path.isfile(kernels):
        typer.echo(f"kvmgpu bench: --kernels {kernels}: no such file (a PTX with a spin(long long) kernel)",
                   err=True)
        raise typer.Exit(2)
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
        log.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(shm)
        shutil.rmtree(tmp, ignore_errors=True)
