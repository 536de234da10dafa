"""What a PTX image declares: its entry points' parameter layouts and its `.global` variables.

The sim backend lays out launches and globals by it; the worker charges a module's globals to the
VM's memory quota by it (`globals_size`). The image is a guest's: read in one pass, in time linear
in its length whatever it holds (the regular expressions this replaced backtracked over runs of
blank lines and parameter lists, hours for a 180 KB image), and numbers past 20 digits are refused.
"""

from __future__ import annotations

from typing import NoReturn

from kvmgpu_wire.cudefs import CUresult

from . import fatbin
from .base import CudaError

_SIZES = {"8": 1, "16": 2, "32": 4, "64": 8}
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_$%")
_NAME = _NAME_START | frozenset("0123456789")
MAX_DIGITS = 20  # an element count or alignment longer than this is not PTX anyone wrote


def _fail(code: CUresult, detail: str) -> NoReturn:
    raise CudaError(code, detail)


def _number(text: str) -> int:
    if not text.isdigit() or len(text) > MAX_DIGITS:
        _fail(CUresult.CUDA_ERROR_INVALID_PTX, f"{text[:40]!r} is not a count PTX allows")
    return int(text)


def _scalar(token: str) -> tuple[str, int] | None:
    """('b'|'u'|'s'|'f', bytes) of a type token such as `.u64`, or None."""
    if len(token) >= 3 and token[0] == "." and token[1] in "busf" and token[2:] in _SIZES:
        return token[1], _SIZES[token[2:]]
    return None


def _name_and_count(tokens: list[str], i: int) -> tuple[str, int] | None:
    """The identifier at tokens[i] and its array count (1 without one), or None."""
    if i >= len(tokens) or not tokens[i] or tokens[i][0] not in _NAME_START:
        return None
    name = tokens[i]
    if any(c not in _NAME for c in name):
        return None
    if i + 2 < len(tokens) and tokens[i + 1] == "[" and tokens[i + 2] != "]":
        return name, _number(tokens[i + 2])
    return name, 1


def _tokens(text: str) -> list[str]:
    return text.replace("[", " [ ").replace("]", " ] ").replace("=", " = ").replace(";", " ; ").split()


def _param(text: str) -> tuple[int, int] | None:
    """(alignment, size) of one `.param` declaration's text after `.param`, or None."""
    t = _tokens(text)
    i, align = 0, 0
    if t[i: i + 1] == [".align"]:
        if len(t) < 2:
            return None
        align, i = _number(t[1]), 2
    scalar = _scalar(t[i]) if i < len(t) else None
    if scalar is None:
        return None
    elem = scalar[1]
    i += 1
    if t[i: i + 1] == [".ptr"]:  # .ptr [.space] [.align N]
        i += 1
        while i < len(t) and t[i].startswith(".") and t[i] != ".align":
            i += 1
        if t[i: i + 1] == [".align"]:
            i += 2
    named = _name_and_count(t, i)
    if named is None:
        return None
    return align or elem, elem * named[1]


def _entries(text: str) -> dict[str, list[tuple[int, int]]]:
    entries = {}
    pos = 0
    while (at := text.find(".entry", pos)) >= 0:
        open_ = text.find("(", at)
        close = text.find(")", open_) if open_ >= 0 else -1
        if close < 0:
            break  # no parameter list can end after this: nor after any later .entry
        name = text[at + 6: open_].strip()
        pos = close + 1
        if not name or name[0] not in _NAME_START or any(c not in _NAME for c in name):
            pos = at + 6
            continue
        layout, offset = [], 0
        for decl in text[open_ + 1: close].split(".param")[1:]:
            p = _param(decl.split(",", 1)[0])
            if p is None:
                continue
            align, size = p
            offset = (offset + align - 1) // align * align
            layout.append((offset, size))
            offset += size
        entries[name] = layout
    return entries


def _globals(text: str) -> dict[str, tuple[int, bytes]]:
    """{name: (size, initial bytes)} of the module-scope `.global` declarations (initial bytes: at
    most `size`, the rest zero)."""
    found = {}
    pos, end = 0, len(text)
    while pos < end:
        nl = text.find("\n", pos)
        line_end = end if nl < 0 else nl
        line = text[pos: line_end].strip()
        pos = line_end + 1
        t = line.split(None, 1)
        if t and t[0] in (".visible", ".weak", ".extern"):
            t = t[1].split(None, 1) if len(t) > 1 else []
        if not t or t[0] != ".global" or len(t) < 2:
            continue
        decl = t[1]
        if ";" not in decl:  # an initialiser over several lines: up to its ';'
            semi = text.find(";", pos)
            if semi < 0:
                break  # no declaration can end after this
            decl += " " + text[pos: semi + 1]
            nl = text.find("\n", semi)
            pos = end if nl < 0 else nl + 1
        decl = decl[: decl.index(";")]
        head, eq, init = decl.partition("=")
        tokens = _tokens(head)
        i = 0
        if tokens[:1] == [".align"]:
            if len(tokens) < 2:
                continue
            _number(tokens[1])
            i = 2
        scalar = _scalar(tokens[i]) if i < len(tokens) else None
        named = _name_and_count(tokens, i + 1) if scalar is not None else None
        if scalar is None or named is None:
            continue
        kind, elem = scalar
        name, count = named
        size = elem * count
        found[name] = (size, _initial(kind, elem, init if eq else None, size))
    return found


def _initial(kind: str, elem: int, init: str | None, size: int) -> bytes:
    """Initial bytes of a scalar global (`0f3F800000`, `0d...`, integers); b"" where it starts
    zeroed (arrays, brace initialisers: never `size` bytes made here, a guest names the size)."""
    if not init or "{" in init or size > 8:
        return b""
    init = init.strip()
    try:
        if init[:2] in ("0f", "0F") and elem == 4:
            return bytes.fromhex(init[2:])[::-1][:size]
        if init[:2] in ("0d", "0D") and elem == 8:
            return bytes.fromhex(init[2:])[::-1][:size]
        if len(init) > MAX_DIGITS + 2:
            return b""
        value = int(init, 0)
        return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    except ValueError:
        return b""


def decode(image: bytes) -> str:
    """The image as PTX text (a fatbin's PTX: fatbin.py), or the CudaError a driver would give
    (binary images named)."""
    if image[:4] == b"\x7fELF":
        _fail(CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU,
              "the sim backend runs PTX only; this image is a cubin (ELF)")
    if fatbin.is_fatbin(image):
        image = fatbin.ptx_text(image)  # (its PTX, or the error saying what it carries instead)
    try:
        text = bytes(image).rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        _fail(CUresult.CUDA_ERROR_INVALID_IMAGE, "the image is neither PTX text nor a CUDA binary")
    if ".version" not in text or ".target" not in text:
        _fail(CUresult.CUDA_ERROR_INVALID_PTX, "PTX without .version/.target directives")
    return text


def parse_ptx(image: bytes) -> tuple[dict, dict]:
    """({entry: [(offset, size)]}, {global: (size, initial bytes)}) read from a PTX image."""
    text = decode(image)
    return _entries(text), _globals(text)


def globals_size(text: str) -> int:
    """Bytes the `.global` variables of PTX `text` declare (what loading it takes for them)."""
    return sum(size for size, _ in _globals(text).values())
