"""The per-GPU table the workers of one GPU coordinate through: a small shared file.

/dev/shm/kvmgpu-gpu<N>-compute (the folder can be moved with KVMGPU_COMPUTE_DIR): a header with
who holds the GPU and since when, then one 64-byte slot per worker. Changes are made under an
exclusive `flock` of the file; reads for the fast path are single aligned loads. Times are
CLOCK_MONOTONIC seconds, which all processes of a host share.

    header: magic u32 | version u32 | owner i32 | pad u32 | owner_since f64 | (pad to 64)
    slot:   pid i32 | mode u32 | weight f64 | vt f64 | want_since f64 | used f64 | seen f64 | (pad)
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct

from kvmgpu.compute.policy import LIMIT, NOBODY, SHARE, SlotState

MAGIC = 0x4B475043  # "CPGK"
VERSION = 1
SLOTS = 64
HEADER = struct.Struct("<IIiId")
HEADER_SIZE = 64
SLOT = struct.Struct("<iIddddd")
SLOT_SIZE = 64
SIZE = HEADER_SIZE + SLOTS * SLOT_SIZE
_OWNER = struct.Struct("<i")
_PIDS = struct.Struct("<" + f"i{SLOT_SIZE - 4}x" * SLOTS)  # every slot's pid, in one read
_OWNER_OFF = 8
_MODES = {SHARE: 0, LIMIT: 1}
_MODE_NAMES = {v: k for k, v in _MODES.items()}


def board_path(gpu: int) -> str:
    folder = os.environ.get("KVMGPU_COMPUTE_DIR", "/dev/shm")
    return os.path.join(folder, f"kvmgpu-gpu{gpu}-compute")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Board:
    """One GPU's table, mapped from its file (created on first use)."""

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
        with self._flock():
            if os.fstat(self._fd).st_size < SIZE:
                os.ftruncate(self._fd, SIZE)
            self._map = mmap.mmap(self._fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            magic, version, *_ = HEADER.unpack_from(self._map, 0)
            if magic != MAGIC or version != VERSION:
                self._map[:SIZE] = bytes(SIZE)
                HEADER.pack_into(self._map, 0, MAGIC, VERSION, NOBODY, 0, 0.0)

    @classmethod
    def for_gpu(cls, gpu: int) -> "Board":
        return cls(board_path(gpu))

    @contextlib.contextmanager
    def _flock(self):
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    locked = _flock

    # --- header ------------------------------------------------------------------------------

    def owner(self) -> int:
        return _OWNER.unpack_from(self._map, _OWNER_OFF)[0]

    def owner_since(self) -> float:
        return HEADER.unpack_from(self._map, 0)[4]

    def set_owner(self, slot: int, now: float) -> None:
        HEADER.pack_into(self._map, 0, MAGIC, VERSION, slot, 0, now)

    # --- slots -------------------------------------------------------------------------------

    def slot(self, index: int) -> SlotState:
        pid, mode, weight, vt, want, _used, _seen = SLOT.unpack_from(self._map, HEADER_SIZE + index * SLOT_SIZE)
        return SlotState(index, pid, _MODE_NAMES.get(mode, SHARE), weight, vt, want)

    def slots(self) -> list[SlotState]:
        """Slots in use by live processes; a dead process's slot is freed on the way."""
        out = []
        for i, pid in enumerate(_PIDS.unpack_from(self._map, HEADER_SIZE)):
            if not pid:
                continue  # a free slot (most are): nothing more to read
            s = self.slot(i)
            if not _alive(s.pid):
                self._clear(i)
                if self.owner() == i:
                    self.set_owner(NOBODY, 0.0)
                continue
            out.append(s)
        return out

    def write(self, s: SlotState, used: float | None = None, seen: float | None = None) -> None:
        off = HEADER_SIZE + s.index * SLOT_SIZE
        old = SLOT.unpack_from(self._map, off)
        SLOT.pack_into(self._map, off, s.pid, _MODES[s.mode], s.weight, s.vt, s.want_since,
                       old[5] if used is None else used, old[6] if seen is None else seen)

    def used(self, index: int) -> float:
        return SLOT.unpack_from(self._map, HEADER_SIZE + index * SLOT_SIZE)[5]

    def _clear(self, index: int) -> None:
        off = HEADER_SIZE + index * SLOT_SIZE
        self._map[off: off + SLOT_SIZE] = bytes(SLOT_SIZE)

    def join(self, pid: int, mode: str, weight: float) -> int:
        """Take a free slot; returns its index."""
        with self._flock():
            live = {s.index for s in self.slots()}
            for i in range(SLOTS):
                if i not in live:
                    self._clear(i)
                    self.write(SlotState(i, pid, mode, float(weight), 0.0, 0.0), used=0.0, seen=0.0)
                    return i
        raise RuntimeError(f"{self.path}: all {SLOTS} compute slots are taken")

    def leave(self, index: int) -> None:
        with self._flock():
            if self.owner() == index:
                self.set_owner(NOBODY, 0.0)
            self._clear(index)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
