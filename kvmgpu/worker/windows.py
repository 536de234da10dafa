"""Sessions' windows of the shared region: page-aligned, first fit; several sessions share it."""

from __future__ import annotations

import bisect

from kvmgpu_wire.protocol import WINDOW_ALIGN

MIN_FALLBACK = 1 << 20  # a window smaller than asked is given only if it is at least this big


def _round_up(n: int) -> int:
    return (n + WINDOW_ALIGN - 1) // WINDOW_ALIGN * WINDOW_ALIGN


class WindowAllocator:
    def __init__(self, region_size: int):
        self.size = region_size // WINDOW_ALIGN * WINDOW_ALIGN
        self._taken: list[tuple[int, int]] = []  # sorted (offset, size)

    def _gaps(self):
        pos = 0
        for off, size in self._taken:
            if off > pos:
                yield pos, off - pos
            pos = off + size
        if self.size > pos:
            yield pos, self.size - pos

    def allocate(self, want: int) -> tuple[int, int] | None:
        """(offset, size) of a new window; `want` 0 takes the largest free gap. None if none fits."""
        gaps = list(self._gaps())
        if not gaps:
            return None
        if want == 0:
            off, size = max(gaps, key=lambda g: g[1])
        else:
            size = _round_up(want)
            fit = next((g for g in gaps if g[1] >= size), None)
            if fit is None:
                # less than asked rather than none: the largest gap, if it is worth having (the
                # guest copies through whatever window it gets, in window-sized chunks)
                off, size = max(gaps, key=lambda g: g[1])
                if size < min(_round_up(want), MIN_FALLBACK):
                    return None
            else:
                off = fit[0]
        bisect.insort(self._taken, (off, size))
        return off, size

    def release(self, offset: int, size: int) -> None:
        try:
            self._taken.remove((offset, size))
        except ValueError:
            pass

    @property
    def used(self) -> int:
        return sum(size for _, size in self._taken)
