"""The `kvmgpu` CLI's commands. `reports_errors` is the one place errors become messages and exit codes."""

from __future__ import annotations

import functools
import sys

import typer

from ..errors import KvmgpuError


def reports_errors(command):
    """Run a command; a KvmgpuError prints `error: <message>` (+ `  hint: ...`) on stderr and exits
    with the error's exit_code."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KvmgpuError as e:
            print(f"error: {e.message}", file=sys.stderr)
            if e.hint:
                print(f"  hint: {e.hint}", file=sys.stderr)
            raise typer.Exit(e.exit_code) from None
    return run
