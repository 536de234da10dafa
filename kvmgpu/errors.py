"""Errors a user sees. Each names the problem and what to do; the CLI maps them to exit codes."""

from __future__ import annotations


class KvmgpuError(Exception):
    """Base of every error kvmgpu reports to a user. `hint` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class InvalidInput(KvmgpuError):
    """A value given on the command line or in configuration is malformed."""

    exit_code = 2


class NotFound(KvmgpuError):
    """A VM, GPU or vGPU named by the user does not exist."""

    exit_code = 3


class NoRoom(KvmgpuError):
    """A vGPU does not fit on any GPU it may go on."""

    exit_code = 4


class LibvirtUnavailable(KvmgpuError):
    """libvirt could not be reached or refused the connection."""

    exit_code = 5


class PermissionDenied(KvmgpuError):
    """The caller may not do this (libvirt or file permissions)."""

    exit_code = 6


class DaemonUnavailable(KvmgpuError):
    """The kvmgpu daemon is not running or its socket cannot be reached."""

    exit_code = 7
