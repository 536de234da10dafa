"""The worker's module cache: loaded modules keyed by the sha256 of their image, bounded LRU.

A guest's handle holds a reference; unloading the handle drops the reference, and the module
stays loaded for the next session that sends the same hash until the LRU evicts it (only
modules no handle uses are evicted). A module whose globals take device memory is charged to the
VM's quota while it is loaded, and is unloaded as soon as no handle uses it: the memory goes
back to the quota with the last handle (unload or session end), not when the LRU gets to it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

DEFAULT_CAPACITY = 32


@dataclass
class CachedModule:
    module: object  # the backend's handle
    size: int
    refs: int = 0
    charge: int = 0  # bytes of the quota its globals are charged


class ModuleCache:
    def __init__(self, backend, capacity: int = DEFAULT_CAPACITY, quota=None):
        self.backend = backend
        self.capacity = capacity
        self.quota = quota  # (MemoryQuota) what a module's charge goes back to when it is unloaded
        self._entries: OrderedDict[bytes, CachedModule] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._entries

    def get(self, digest: bytes) -> object:
        """The loaded module of a digest some handle holds."""
        return self._entries[digest].module

    def acquire(self, digest: bytes) -> object | None:
        """The loaded module for `digest` with one more reference, or None."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        self._entries.move_to_end(digest)
        entry.refs += 1
        return entry.module

    def add(self, digest: bytes, module: object, size: int, charge: int = 0) -> object:
        """Keep a freshly loaded module, with one reference (and `charge` bytes of the quota,
        already taken, given back when it is unloaded)."""
        self._entries[digest] = CachedModule(module, size, 1, charge)
        self._evict()
        return module

    def release(self, digest: bytes) -> None:
        entry = self._entries.get(digest)
        if entry is not None and entry.refs > 0:
            entry.refs -= 1
            if entry.refs == 0 and entry.charge:
                self._unload(digest)
        self._evict()

    def _evict(self) -> None:
        if len(self._entries) <= self.capacity:
            return
        for digest in [d for d, e in self._entries.items() if e.refs == 0]:
            if len(self._entries) <= self.capacity:
                break
            self._unload(digest)

    def _unload(self, digest: bytes) -> None:
        entry = self._entries.pop(digest)
        try:
            self.backend.module_unload(entry.module)
        except Exception:  # a broken context: the module goes with it
            pass
        if entry.charge and self.quota is not None:
            self.quota.release(entry.charge)

    def forget(self) -> None:
        """Drop everything without unloading (the context that held the modules is gone)."""
        self._entries.clear()
