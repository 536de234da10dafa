"""A hostile guest's script: the input format of the channel harness (fuzz_channel.py).

Any bytes are a script. Byte 0 picks the backend (bit 0: the sim backend behind the worker's C
launch loop, as the cuda backend's launches go; else the plain sim backend). Then steps, each a
tag byte (taken modulo the number of steps) and its fields; a step cut short by the end of the
input is dropped. Multi-byte fields are little-endian.

    RAW     n:u16 bytes[n]                 bytes written to the channel, as they are (recorded
                                           client traffic is a run of these)
    CALL    slot op flags arg... blob      one well-formed call, built by the guest's own
                                           `Connection` (GUEST role), its fields picked from
                                           what the session has seen (handles, pointers) or
                                           raw; flags bit 0: queued, bit 1: posted to the
                                           mailbox, bit 2: held to go with the next call (a
                                           batch, as the guest sends them)
    HELLO   slot window maxframe           a session says HELLO (again)
    GOODBYE slot
    IMAGE   slot image offset:u32 load     an image written into the session's window (one of
                                           IMAGES, or from 128 on, n:u16 bytes[n] after
                                           `load`), then, where `load` is odd,
                                           a MODULE_LOAD naming it by its sha256
    POKE    slot offset:u32 n:u8 bytes[n]  the guest writes its own window
    POST    slot size n:u16 bytes[n]       bytes posted to the session's mailbox (`size` odd:
                                           the size word says n; else whatever u16 follows)

A slot is a session number on the channel (1, 2 or 3). An argument is one selector byte and
its payload:

    0 zero   1 a byte   2 a raw u64   3 a value the session was given (byte: which)
    4 such a value plus a byte   5 a window offset (u16 x 16)   6 a power of two (byte)
    7 a size (u16 x 4)

A blob is one selector byte and its payload: 0 none, 1 the sha256 of an image (byte: which),
2 a name (byte: which), 3 raw bytes (n:u16, cut to the op's limit), 4 kernel parameters
(byte: how many u64 pointers the session was given, bit 3: and a u32 count of 64).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from kvmgpu_wire.protocol import OPS, Op

KERNELS = Path(__file__).resolve().parent.parent / "kernels" / "kernels.ptx"
PTX = KERNELS.read_bytes()
# A module with a .global and an entry of each parameter kind the parser knows.
SMALL_PTX = b""".version 8.0
.target sm_90
.address_size 64
.global .align 8 .u64 counter = 5;
.global .align 4 .f32 table[16];
.visible .entry vector_add(.param .u64 a, .param .u64 b, .param .u64 c, .param .u32 n) { ret; }
.visible .entry saxpy(.param .f32 a, .param .u64 x, .param .u64 y, .param .u32 n) { ret; }
.visible .entry write_oob(.param .u64 p, .param .u64 i) { ret; }
.visible .entry odd(.param .align 16 .b8 blob[24], .param .u16 h) { ret; }
"""
IMAGES = [PTX, SMALL_PTX, b"\x7fELF" + bytes(60), b"\x50\xed\x55\xba" + bytes(60), b"not ptx"]
NAMES = [b"vector_add", b"saxpy", b"stencil1d", b"scale_by_global", b"write_oob", b"spin", b"scale",
         b"counter", b"table", b"odd", b"no_such", b"", b"a\0b", b"\xff"]
RAW_IMAGE_MAX = 8192  # raw image bytes a step may carry

STEPS = ("RAW", "CALL", "HELLO", "GOODBYE", "IMAGE", "POKE", "POST")
TAG = {name: i for i, name in enumerate(STEPS)}
OP_LIST = sorted(Op, key=int)


class Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise EOFError
        b = self.data[self.pos: self.pos + n]
        self.pos += n
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def more(self) -> bool:
        return self.pos < len(self.data)


def slot_session(b: int) -> int:
    return 1 + b % 3


# --- reading a script: (step name, fields) -----------------------------------------------------

def read_arg(r: Reader) -> tuple:
    sel = r.u8() % 8
    if sel == 0:
        return ("zero",)
    if sel in (1, 3, 6):
        return (("byte", "seen", "pow2")[(1, 3, 6).index(sel)], r.u8())
    if sel == 2:
        return ("u64", r.u64())
    if sel == 4:
        return ("seen+", r.u8(), r.u8())
    if sel == 5:
        return ("window", r.u16())
    return ("size", r.u16())


def read_blob(r: Reader) -> tuple:
    sel = r.u8() % 5
    if sel == 0:
        return ("none",)
    if sel in (1, 2, 4):
        return (("sha", "name", None, "params")[sel - 1], r.u8())
    n = r.u16()
    return ("raw", r.take(min(n, len(r.data) - r.pos)))


def read_steps(data: bytes):
    """Yield (name, fields) for each whole step of `data` after its backend byte."""
    r = Reader(data, 1)
    while r.more():
        start = r.pos
        try:
            tag = STEPS[r.u8() % len(STEPS)]
            if tag == "RAW":
                n = r.u16()
                yield tag, (r.take(min(n, len(r.data) - r.pos)),)
            elif tag == "CALL":
                slot, op, flags = r.u8(), OP_LIST[r.u8() % len(OP_LIST)], r.u8()
                args = tuple(read_arg(r) for _ in OPS[op].args)
                yield tag, (slot, op, flags, args, read_blob(r))
            elif tag == "HELLO":
                yield tag, (r.u8(), r.u8(), r.u8())
            elif tag == "GOODBYE":
                yield tag, (r.u8(),)
            elif tag == "IMAGE":
                slot, which, offset, load = r.u8(), r.u8(), r.u32(), r.u8()
                image = IMAGES[which % len(IMAGES)] if which < 128 else r.take(min(r.u16(), RAW_IMAGE_MAX))
                yield tag, (slot, image, offset, load)
            elif tag == "POKE":
                slot, offset, n = r.u8(), r.u32(), r.u8()
                yield tag, (slot, offset, r.take(n))
            else:
                slot, size, n = r.u8(), r.u8(), r.u16()
                body = r.take(min(n, len(r.data) - r.pos))
                yield tag, (slot, len(body) if size & 1 else r.u16(), body)
        except EOFError:
            r.pos = start
            return


# --- writing a script (the seed corpus) ---------------------------------------------------------

def raw(data: bytes) -> bytes:
    out = b""
    for i in range(0, len(data), 0xFFFF):
        part = data[i: i + 0xFFFF]
        out += bytes([TAG["RAW"]]) + struct.pack("<H", len(part)) + part
    return out


def arg_byte(v: int) -> bytes:
    return b"\x01" + bytes([v])


def arg_u64(v: int) -> bytes:
    return b"\x02" + struct.pack("<Q", v)


def arg_seen(i: int, plus: int | None = None) -> bytes:
    return b"\x03" + bytes([i]) if plus is None else b"\x04" + bytes([i, plus])


def arg_window(offset: int) -> bytes:
    return b"\x05" + struct.pack("<H", offset // 16)


def arg_size(n: int) -> bytes:
    return b"\x07" + struct.pack("<H", n // 4)


def call(slot: int, op: Op, args: list[bytes], blob: bytes = b"\x00", queued=False, posted=False,
         held=False) -> bytes:
    flags = (1 if queued else 0) | (2 if posted else 0) | (4 if held else 0)
    return bytes([TAG["CALL"], slot - 1, OP_LIST.index(op), flags]) + b"".join(args) + blob


def blob_sha(which: int) -> bytes:
    return b"\x01" + bytes([which])


def blob_name(which: int) -> bytes:
    return b"\x02" + bytes([which])


def blob_params(count: int, tail: bool) -> bytes:
    return b"\x04" + bytes([count | (8 if tail else 0)])


def hello(slot: int, window: int = 0, max_frame: int = 0) -> bytes:
    return bytes([TAG["HELLO"], slot - 1, window, max_frame])


def goodbye(slot: int) -> bytes:
    return bytes([TAG["GOODBYE"], slot - 1])


def image(slot: int, which: int, offset: int, load: bool = True) -> bytes:
    return bytes([TAG["IMAGE"], slot - 1, which]) + struct.pack("<I", offset) + bytes([1 if load else 0])


def image_raw(slot: int, data: bytes, offset: int, load: bool = True) -> bytes:
    """An image given as its bytes (the PTX reader's input, mutated)."""
    return (bytes([TAG["IMAGE"], slot - 1, 128]) + struct.pack("<I", offset) + bytes([1 if load else 0])
            + struct.pack("<H", len(data)) + data)


def post(slot: int, frames: bytes) -> bytes:
    return bytes([TAG["POST"], slot - 1, 1]) + struct.pack("<H", len(frames)) + frames


def sha(image: bytes) -> bytes:
    return hashlib.sha256(image).digest()
