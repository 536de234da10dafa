"""Sizes in libvirt's units: `8G` is 8 GiB, `8GB` is 8*10**9, `512M`, `1024K`, plain bytes."""

from __future__ import annotations

import re

from .errors import InvalidInput

_BINARY = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
           "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40, "p": 1 << 50, "pib": 1 << 50}
_DECIMAL = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}
_UNITS = {**_BINARY, **_DECIMAL}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes in `text`, read with libvirt's units (case-insensitive, as libvirt reads them)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = text, ""
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise InvalidInput(
                f"{what} {text!r} is not a size",
                "give a whole number with an optional unit: 8G (GiB), 8GB (10^9 bytes), 512M, 1024K, or bytes",
            )
        value, unit = int(m.group(1)), m.group(2).lower()
    if unit not in _UNITS:
        raise InvalidInput(
            f"{what} {text!r} has an unknown unit {unit!r}",
            "use libvirt's units: K, M, G, T (powers of 1024) or KB, MB, GB, TB (powers of 1000)",
        )
    size = value * _UNITS[unit]
    if size <= 0:
        raise InvalidInput(f"{what} {text!r} must be more than zero bytes")
    return size


def format_size(nbytes: int) -> str:
    """A short human form in binary units, e.g. 8 GiB, 1.5 GiB, 512 MiB."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{nbytes} B"
