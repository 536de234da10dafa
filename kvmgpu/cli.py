"""The `kvmgpu` command."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="kvmgpu: mediated vGPUs for libvirt/QEMU-KVM guests.")


def main() -> None:
    app()
