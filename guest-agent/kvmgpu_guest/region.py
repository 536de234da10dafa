"""The shared-memory region: a file on the host (/dev/shm/kvmgpu-VM), the ivshmem BAR2 in a VM.

Both sides map the same bytes. A `Region` hands out bounds-checked views; a `Window` is one
session's slice of it (offsets in calls are relative to the window).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass


# Linux 5.14's madvise(MADV_POPULATE_WRITE): fault a range's pages in now, writable.
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


class RegionError(Exception):
    """The region could not be opened or an access fell outside it."""


class Region:
    def __init__(self, fd: int, size: int, path: str):
        self.path = path
        self.size = size
        self._mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self._mmap)

    @classmethod
    def open_file(cls, path: str, size: int | None = None, create: bool = False) -> "Region":
        """Map a region file. With `create`, make it (or grow it) to `size` bytes."""
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            fd = os.open(path, flags, 0o660)
        except OSError as e:
            raise RegionError(f"cannot open shared region {path}: {e.strerror}") from None
        try:
            actual = os.fstat(fd).st_size
            if create and size and actual < size:
                os.ftruncate(fd, size)
                actual = size
            if size is None:
                size = actual
            if size <= 0 or actual < size:
                raise RegionError(f"shared region {path} is {actual} bytes, expected {size or 'more than 0'}")
            return cls(fd, size, path)
        finally:
            os.close(fd)

    @classmethod
    def open_pci(cls, sysfs_device: str) -> "Region":
        """Map BAR2 of an ivshmem-plain device, e.g. /sys/bus/pci/devices/0000:00:05.0."""
        return cls.open_file(os.path.join(sysfs_device, "resource2"))

    def window(self, offset: int, size: int) -> "Window":
        if offset < 0 or size <= 0 or offset + size > self.size:
            raise RegionError(f"window [{offset}, +{size}) is outside the {self.size}-byte region")
        return Window(self.view[offset: offset + size], offset, size)

    def populate(self, offset: int, size: int) -> None:
        """Map the pages of [offset, +size) into this process now, so that the first copies
        through them do not take a page fault every 4 KiB (docs/performance.md, "Bulk copies").
        Best effort: older kernels and a PCI BAR say no, harmlessly."""
        try:
            self._mmap.madvise(MADV_POPULATE_WRITE, offset, size)
        except (OSError, ValueError, AttributeError):
            pass

    def close(self) -> None:
        self.view.release()
        self._mmap.close()


@dataclass
class Window:
    """One session's slice of the region. `view` is a memoryview of exactly `size` bytes."""

    view: memoryview
    offset: int  # where the window starts in the region
    size: int

    def check(self, offset: int, nbytes: int) -> None:
        if offset < 0 or nbytes < 0 or offset + nbytes > self.size:
            raise RegionError(f"[{offset}, +{nbytes}) is outside the {self.size}-byte window")
