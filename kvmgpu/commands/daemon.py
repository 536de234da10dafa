"""`kvmgpu daemon`: run the host daemon in the foreground (systemd runs it with kvmgpu.service)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from ..config import load_config
from . import reports_errors


@reports_errors
def daemon(
    connect: Optional[str] = typer.Option(None, "--connect", "-c", help="libvirt URI (default qemu:///system)"),
    config: Optional[str] = typer.Option(None, "--config", help="configuration file (default "
                                         "/etc/kvmgpu/kvmgpu.toml or $KVMGPU_CONFIG)"),
    run_dir: Path = typer.Option(Path("/run/kvmgpu"), "--run-dir",
                                 help="where worker pidfiles and stats files go"),
    worker_user: Optional[str] = typer.Option(
        None, "--worker-user", envvar="KVMGPU_WORKER_USER",
        help="user workers run as (default: QEMU's user from /etc/libvirt/qemu.conf; 'root' to not switch)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log debug messages"),
) -> None:
    """Run the kvmgpu host daemon in the foreground: a worker for every running VM with a vGPU,
    the local API socket, Prometheus metrics and the usage history."""
    from ..daemon.service import Options, serve

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s"
                        if not os.environ.get("INVOCATION_ID") else "%(levelname)s %(name)s: %(message)s")
    options = Options(uri=connect, run_dir=run_dir, worker_user=worker_user)
    raise typer.Exit(serve(load_config(config), options))
