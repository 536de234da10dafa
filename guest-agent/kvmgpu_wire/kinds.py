"""What an argument of a forwarded call *is*: its kind, which is also the host's check of it.

Every argument on the wire is a u64; a call may also carry one blob. A kind says what the u64
stands for in the guest's world (a handle of one of its session's tables, a device range inside
its allocations, a range of its window, flags under a mask, a bounded number), and so what the
worker must check before it touches anything, and with which CUDA error a bad value is refused.
The negative-test matrix (tests/worker/test_op_matrix.py) sends, for every argument of every op,
the hostile values its kind names in `hostile`, and checks that error and that nothing changed.

Kinds say nothing about I/O: they are data, read by the generator (tools/gen_wire.py), the
worker's checks and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

# The CUDA errors a kind refuses with (cudaError_enum values; kvmgpu_wire.cudefs has them all).
INVALID_VALUE = 1
OUT_OF_MEMORY = 2
INVALID_HANDLE = 400
NOT_FOUND = 500

# a session's handle tables
TABLES = ("modules", "functions", "streams", "events", "graphs", "graph_execs")


@dataclass(frozen=True)
class Arg:
    """One u64 argument. `doc` says what it is, for the protocol's op table."""

    name: str
    doc: str = ""

    error: ClassVar[int] = 0  # the CUDA error a hostile value gets (0: no value is hostile)

    @property
    def check(self) -> str:
        """What the host checks, for the protocol's op table (a kind's constant or its property)."""
        return "any value"

    @property
    def hostile(self) -> tuple[str, ...]:
        """The names of the variants the matrix sends (see tests/worker/test_op_matrix.py)."""
        return ()


@dataclass(frozen=True)
class Handle(Arg):
    """A handle the worker gave this session, from `table`; `null` lets 0 stand for none (the
    null stream). Another session's handle, a made-up one, one already released: INVALID_HANDLE."""

    table: str = "streams"
    null: bool = False
    ends: bool = False  # the call releases the handle (a destroy, an unload)

    error = INVALID_HANDLE
    hostile = ("unknown", "other_session", "released")

    def __post_init__(self):
        assert self.table in TABLES, self.table

    @property
    def check(self) -> str:
        null = " (0: the null stream)" if self.null else ""
        ends = "; released by the call" if self.ends else ""
        return f"a handle in the session's {self.table} table{null}{ends}"


@dataclass(frozen=True)
class Allocation(Arg):
    """The start of a device allocation this session made (what cuMemFree takes). 0 is allowed
    and does nothing, as natively."""

    error = INVALID_VALUE
    hostile = ("inside", "unknown", "other_session")
    check = "the start of one of the session's allocations, or 0"


@dataclass(frozen=True)
class DevicePtr(Arg):
    """A device address: with the length argument `length` (times `scale`), the range
    [ptr, ptr + length*scale) must lie inside one allocation (or module global) of this session."""

    length: str = "nbytes"
    scale: int = 1
    error = INVALID_VALUE
    hostile = ("past_end", "unknown", "other_session")

    @property
    def check(self) -> str:
        n = self.length if self.scale == 1 else f"{self.length}*{self.scale}"
        return f"[{self.name}, +{n}) inside one allocation of the session"


@dataclass(frozen=True)
class WindowOffset(Arg):
    """An offset into the session's window of the shared region: [offset, offset + length) must
    lie inside it. `length` names the length argument, or is a number of bytes."""

    length: str | int = "nbytes"
    align: int = 1
    error = INVALID_VALUE
    hostile = ("past_end", "huge")

    @property
    def check(self) -> str:
        aligned = f", {self.align}-aligned" if self.align > 1 else ""
        return f"[{self.name}, +{self.length}) inside the session's window{aligned}"


@dataclass(frozen=True)
class Length(Arg):
    """A byte or element count. Its bounds come from the ranges it measures (a DevicePtr or a
    WindowOffset names it); `min` is the smallest count the op accepts."""

    min: int = 0
    max: int = 2**64 - 1
    hint: str = ""  # what to do instead, in the error's text
    error = INVALID_VALUE

    @property
    def hostile(self) -> tuple[str, ...]:
        return (("under",) if self.min else ()) + (("over",) if self.max < 2**64 - 1 else ())

    @property
    def check(self) -> str:
        if self.max < 2**64 - 1:
            return f"{self.min}..{self.max}"
        return f"at least {self.min}; bounded by its ranges" if self.min else "bounded by its ranges"


@dataclass(frozen=True)
class Flags(Arg):
    """Flags: a bit outside `mask` is INVALID_VALUE."""

    mask: int = 0
    error = INVALID_VALUE
    hostile = ("bad_bit",)

    @property
    def check(self) -> str:
        return f"bits within 0x{self.mask:x}"


@dataclass(frozen=True)
class Value(Arg):
    """A number of at most `max` (a memset's value: what fits its width)."""

    max: int = 2**64 - 1
    error = INVALID_VALUE

    @property
    def hostile(self) -> tuple[str, ...]:
        return ("over",) if self.max < 2**64 - 1 else ()

    @property
    def check(self) -> str:
        return f"at most 0x{self.max:x}" if self.max < 2**64 - 1 else "any value"


@dataclass(frozen=True)
class Dim(Arg):
    """A launch shape's number: `min` up to the device's limit for it
    (CU_DEVICE_ATTRIBUTE_`attribute`)."""

    attribute: int = 0
    min: int = 1
    error = INVALID_VALUE

    @property
    def hostile(self) -> tuple[str, ...]:
        return (("zero",) if self.min else ()) + ("over",)

    @property
    def check(self) -> str:
        return f"{self.min} .. the device's attribute {self.attribute}"


# --- the blob: at most one per call ---------------------------------------------------------------

@dataclass(frozen=True)
class Blob:
    """What a call's blob is. `max` bytes at most (the frame decoder refuses more)."""

    max: int
    doc: str = ""
    check: ClassVar[str] = "at most max bytes"
    hostile: ClassVar[tuple[str, ...]] = ("oversized",)


@dataclass(frozen=True)
class Name(Blob):
    check = "UTF-8, not empty, no NUL"
    hostile = ("oversized", "not_utf8", "empty", "nul")


@dataclass(frozen=True)
class Digest(Blob):
    check = "exactly 32 bytes (a sha256)"
    hostile = ("oversized", "short")


@dataclass(frozen=True)
class Params(Blob):
    check = "exactly the function's parameter bytes"
    hostile = ("oversized", "short")


# --- results ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    """One value of a success reply, by struct format ("Q" a u64, "f" a float)."""

    name: str
    format: str = "Q"
    doc: str = ""


@dataclass(frozen=True)
class NewHandle(Result):
    """A handle the worker hands out in `table`: counted against the session's limit for that
    table (OUT_OF_MEMORY past it) and released when the session ends."""

    table: str = "streams"


@dataclass(frozen=True)
class NewRange(Result):
    """A device address the session may use from now on (a module global): its range joins the
    session's, counted against what the worker keeps for the VM."""
