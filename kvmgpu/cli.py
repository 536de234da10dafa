"""The `kvmgpu` command. Each command lives in kvmgpu/commands/ (bench in kvmgpu/bench.py); errors
become messages and exit codes in one place, `kvmgpu.commands.reports_errors`. A module kvmgpu
needs that this Python cannot import (libvirt's binding above all, which is not on PyPI's wheels
but Debian's python3-libvirt) is reported here, in `main`, as one error rather than a traceback."""

from __future__ import annotations

import sys

import typer

from kvmgpu_wire.protocol import PROTOCOL_VERSION

from . import __version__
from .bench import bench_command
from .commands import vgpu
from .commands.daemon import daemon
from .commands.worker import worker
from .errors import LibvirtUnavailable

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="kvmgpu: mediated vGPUs for libvirt/QEMU-KVM guests.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kvmgpu {__version__} (protocol {PROTOCOL_VERSION})")
        raise typer.Exit()


@app.callback()
def _commands(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                           help="print kvmgpu's version and its guest protocol's, and exit")
              ) -> None:
    """kvmgpu: mediated vGPUs for libvirt/QEMU-KVM guests."""


vgpu.register(app)  # attach, detach, list, gpus
app.command("daemon")(daemon)
app.command("worker")(worker)
app.command("bench")(bench_command)


def missing_module_error(e: ImportError) -> tuple[str, int]:
    """The one line (and exit code) that says which module kvmgpu lacks and how to get it."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    if name == "libvirt" or "libvirt" in str(e):
        return (f"error: libvirt's Python binding cannot be imported by {sys.executable} ({e}): install "
                "python3-libvirt and make kvmgpu's venv with `/usr/bin/python3 -m venv "
                "--system-site-packages` (README, Install)", LibvirtUnavailable.exit_code)
    return (f"error: kvmgpu cannot import {name or 'a module it needs'} ({e}): reinstall kvmgpu "
            "(README, Install)", 1)


def main() -> None:
    try:
        app()
    except ImportError as e:
        line, code = missing_module_error(e)
        print(line, file=sys.stderr)
        sys.exit(code)
