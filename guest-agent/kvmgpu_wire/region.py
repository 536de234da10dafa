"""The shared-memory region: a file on the host (/dev/shm/kvmgpu-VM), the ivshmem BAR2 in a VM.

Both sides map the same bytes. A `Region` hands out bounds-checked views; a `Window` is one
session's slice of it (offsets in calls are relative to the window).
"""

from __future__ import annotations

import errno
import mmap
import os
from dataclasses import dataclass

# Linux 5.14's madvise(MADV_POPULATE_WRITE): fault a range's pages in now, writable.
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


class RegionError(Exception):
    """The region could not be opened or an access fell outside it; `hint` says what to do."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class Region:
    def __init__(self, fd: int, size: int, path: str):
        self.path = path
        self.size = size
        self._mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self._mmap)

    @classmethod
    def open_file(cls, path: str, size: int | None = None, create: bool = False,
                  reserve: bool = False) -> "Region":
        """Map a region file. With `create`, make it (or grow it) to `size` bytes. With `create`
        or `reserve`, its space is taken now (`posix_fallocate`): a sparse file on a full
        filesystem would kill whoever first touches a page of it (SIGBUS) instead. A file made
        here is removed again when that fails."""
        made = False
        try:
            if create:
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o660)
                    made = True
                except FileExistsError:
                    fd = os.open(path, os.O_RDWR)
            else:
                fd = os.open(path, os.O_RDWR)
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
            if create or reserve:
                _reserve(fd, path, size)
            return cls(fd, size, path)
        except BaseException:
            if made:
                os.unlink(path)
            raise
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


def _reserve(fd: int, path: str, size: int) -> None:
    """Take the file's `size` bytes on its filesystem now, or say that there is no room."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENODEV, errno.ESPIPE):
            return  # a file that cannot be reserved (no such file system call there): as it is
        if e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise RegionError(f"cannot reserve {size} bytes for shared region {path}: {e.strerror}") from None
        mount, fstype = _filesystem(path)
        st = os.statvfs(path)
        free = st.f_bavail * st.f_frsize
        raise RegionError(
            f"no room for the {size}-byte shared region {path}: {mount} ({fstype}) has {free} bytes "
            f"free", f"free space on {mount}, make it bigger (a tmpfs: mount -o remount,size=... "
            f"{mount}), or ask for a smaller region") from None


def _filesystem(path: str) -> tuple[str, str]:
    """(mount point, file system type) of the file system that holds `path`."""
    real = os.path.realpath(path)
    best = ("/", "?")
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best[0]):
                    best = (mount, fields[2])
    except OSError:
        pass
    return best


@dataclass
class Window:
    """One session's slice of the region. `view` is a memoryview of exactly `size` bytes."""

    view: memoryview
    offset: int  # where the window starts in the region
    size: int

    def check(self, offset: int, nbytes: int) -> None:
        if offset < 0 or nbytes < 0 or offset + nbytes > self.size:
            raise RegionError(f"[{offset}, +{nbytes}) is outside the {self.size}-byte window")
