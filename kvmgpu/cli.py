"""The `kvmgpu` command. Each command lives in kvmgpu/commands/ (bench in kvmgpu/bench.py); errors
become messages and exit codes in one place, `kvmgpu.commands.reports_errors`."""

from __future__ import annotations

import typer

from .bench import bench_command
from .commands import vgpu
from .commands.daemon import daemon
from .commands.worker import worker

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="kvmgpu: mediated vGPUs for libvirt/QEMU-KVM guests.")


@app.callback()
def _commands() -> None:
    """kvmgpu: mediated vGPUs for libvirt/QEMU-KVM guests."""


vgpu.register(app)  # attach, detach, list, gpus
app.command("daemon")(daemon)
app.command("worker")(worker)
app.command("bench")(bench_command)


def main() -> None:
    app()
