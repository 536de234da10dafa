"""`kvmgpu worker`: one vGPU served to one VM (the daemon starts it; tests and benchmarks too)."""

from __future__ import annotations

import typer

from . import reports_errors


@reports_errors
def worker(
    backend: str = typer.Option(
        ..., help="cuda (the product) or sim (DEVELOPMENT backend: no GPU, test kernels only)"),
    gmem: str = typer.Option(..., help="device-memory quota, libvirt units (8G, 512M)"),
    socket: str = typer.Option(..., help="channel socket: connect if QEMU listens on it, else listen (loopback)"),
    shm: str = typer.Option(..., help="shared region file: opened if present, else created; its space is reserved; "
                                      "loopback mode removes it on exit"),
    region_size: str = typer.Option("64M", help="size of the shared region when the worker creates it"),
    vm: str = typer.Option("", help="the VM's name (logs, stats)"),
    gpu: int = typer.Option(0, help="GPU index (cuda backend)"),
    compute: int = typer.Option(100, help="compute share in percent"),
    compute_mode: str = typer.Option("share", help="share (work-conserving) or limit (hard cap)"),
    stats_file: str = typer.Option(
        None, help="rewrite this JSON file with the worker's counters, at most once a second"),
    max_channels: int = typer.Option(256, help="loopback mode: connections served at once (also kept 64 under the "
                                               "descriptor limit); more are refused"),
    connect: bool = typer.Option(False, "--connect", help="the VM's channel only: connect to the socket QEMU listens "
                                 "on, or exit with an error; never listen (loopback). The daemon's workers run so"),
) -> None:
    """Serve one vGPU to one VM in the foreground until SIGTERM/SIGINT or the VM's channel closes."""
    from ..sizes import parse_size
    from ..worker import WorkerConfig, serve

    serve(WorkerConfig(backend=backend, gmem=parse_size(gmem, "--gmem"), socket=socket, shm=shm,
                       region_size=parse_size(region_size, "--region-size"), vm=vm, gpu=gpu,
                       compute=compute, compute_mode=compute_mode, stats_file=stats_file,
                       max_channels=max_channels, connect=connect))
