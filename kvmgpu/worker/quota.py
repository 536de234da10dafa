"""The VM's device-memory quota: charged before the backend allocates, given back on free."""

from __future__ import annotations


class MemoryQuota:
    """Bytes of device memory one VM may hold; all its sessions share it."""

    def __init__(self, limit: int):
        if limit <= 0:
            raise ValueError("a memory quota must be more than zero bytes")
        self.limit = limit
        self.used = 0
        self.peak = 0  # the most it has held at once (the daemon samples `used`: it would miss peaks)

    @property
    def free(self) -> int:
        return self.limit - self.used

    def charge(self, nbytes: int) -> bool:
        """Take `nbytes` if they fit (exactly at the limit fits); False changes nothing."""
        if nbytes < 0 or nbytes > self.limit - self.used:
            return False
        self.used += nbytes
        if self.used > self.peak:
            self.peak = self.used
        return True

    def release(self, nbytes: int) -> None:
        self.used = max(0, self.used - nbytes)
