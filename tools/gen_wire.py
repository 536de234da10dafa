"""Write what is generated from the op specification (guest-agent/kvmgpu_wire/spec.py).

    python3 tools/gen_wire.py           # rewrite the generated files (`make gen`)
    python3 tools/gen_wire.py --check   # exit 1, naming them, when any is stale (a test runs this)

Generated: the Python op tables (guest-agent/kvmgpu_wire/ops.py), the C header both C pieces
include (guest-agent/include/kvmgpu_wire.h: frame layout, kinds, op ids, each op's argument and
result structs, the launch record, with static asserts of every size), and the op table of
docs/protocol.md (between its `ops:begin` and `ops:end` markers).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "guest-agent"))

from kvmgpu_wire import spec  # noqa: E402
from kvmgpu_wire.kinds import NewHandle  # noqa: E402

BANNER = "generated from guest-agent/kvmgpu_wire/spec.py by tools/gen_wire.py (make gen): do not edit"
C_TYPES = {"B": "uint8_t", "H": "uint16_t", "I": "uint32_t", "Q": "uint64_t", "i": "int32_t", "f": "float"}


# --- Python ---------------------------------------------------------------------------------------

def python_ops() -> str:
    out = [f'"""The op tables ({BANNER})."""', "", "import enum", "",
           f"PROTOCOL_VERSION = {spec.PROTOCOL_VERSION}",
           f"MAGIC = 0x{spec.MAGIC:04X}",
           f'HEADER_FORMAT = "<{"".join(f for _, f in spec.HEADER)}"',
           f'CALL_HEAD_FORMAT = "<{"".join(f for _, f in spec.CALL_HEAD)}"',
           f'LAUNCH_RECORD_FORMAT = "={"".join(f for _, f in spec.LAUNCH_RECORD)}"',
           f"QUEUED = 0x{spec.QUEUED:02x}",
           f"MAX_ARG_BYTES = {spec.MAX_ARG_BYTES}",
           f"MAX_NAME = {spec.MAX_NAME}", "", "",
           "class Kind(enum.IntEnum):"]
    out += [f"    {name} = {value}" for name, value in spec.KINDS]
    out += ["", "", "class Op(enum.IntEnum):"]
    out += [f"    {op.name} = {op.id}  # {op.cuda}" for op in spec.OPS]
    out += ["", "",
            "# op: (argument names, result struct format, most blob bytes, queueable, synchronising)",
            "TABLE = {"]
    for op in spec.OPS:
        blob = op.blob.max if op.blob else 0
        out.append(f"    Op.{op.name}: ({op.arg_names!r}, {op.result_format!r}, {blob}, "
                   f"{op.queueable}, {op.synchronising}),")
    out += ["}", "",
            "# the ops that wait for the GPU: always, or only when not queued (the compute gate meters them)",
            "WAITS_GPU = {"]
    out += [f"    Op.{op.name}: {op.waits_gpu!r}," for op in spec.OPS if op.waits_gpu]
    out += ["}", ""]
    return "\n".join(out)


# --- C --------------------------------------------------------------------------------------------

def _c_fields(fields) -> list[str]:
    lines = []
    for name, fmt in fields:
        count = fmt[:-1]
        lines.append(f"    {C_TYPES[fmt[-1]]} {name}{f'[{count}]' if count else ''};")
    return lines


def _size(fmt: str, order: str = "<") -> int:
    return struct.calcsize(order + fmt)


def c_header() -> str:
    out = [f"/* kvmgpu's wire format ({BANNER}). */",
           "#ifndef KVMGPU_WIRE_H", "#define KVMGPU_WIRE_H", "", "#include <stdint.h>", "",
           f"#define KVMGPU_PROTOCOL_VERSION {spec.PROTOCOL_VERSION}",
           f"#define KVMGPU_MAGIC 0x{spec.MAGIC:04X}u",
           f"#define KVMGPU_QUEUED 0x{spec.QUEUED:02X}u",
           f"#define KVMGPU_MAX_ARG_BYTES {spec.MAX_ARG_BYTES}",
           f"#define KVMGPU_MAX_NAME {spec.MAX_NAME}", "",
           "/* Every frame: this header (little-endian), then `length` bytes of payload. */",
           "struct kvmgpu_frame_header {"]
    out += _c_fields(spec.HEADER)
    out += ["};", f"_Static_assert(sizeof(struct kvmgpu_frame_header) == {_size(''.join(f for _, f in spec.HEADER))}, "
            '"frame header");', "", "enum kvmgpu_kind {"]
    out += [f"    KVMGPU_{name} = {value}," for name, value in spec.KINDS]
    out += ["};", "", "/* A CALL's payload starts with this; `nargs` u64 arguments follow, then the blob. */",
            "struct kvmgpu_call_head {"]
    out += _c_fields(spec.CALL_HEAD)
    out += ["};", f"_Static_assert(sizeof(struct kvmgpu_call_head) == {_size(''.join(f for _, f in spec.CALL_HEAD))}, "
            '"call head");', "", "enum kvmgpu_op {"]
    out += [f"    KVMGPU_OP_{op.name} = {op.id}, /* {op.cuda} */" for op in spec.OPS]
    out += ["};", "", "/* Each op's arguments, in order (copied after the call head: not aligned there), its"
            "\n * most blob bytes, whether it may be queued, and its success reply's results (packed). */"]
    for op in spec.OPS:
        lower = op.name.lower()
        out.append(f"#define KVMGPU_{op.name}_NARGS {len(op.args)}")
        out.append(f"#define KVMGPU_{op.name}_BLOB_MAX {op.blob.max if op.blob else 0}")
        out.append(f"#define KVMGPU_{op.name}_QUEUEABLE {int(op.queueable)}")
        out.append(f"#define KVMGPU_{op.name}_SYNCHRONISING {int(op.synchronising)}")
        if op.args:
            out.append(f"struct kvmgpu_args_{lower} {{")
            out += [f"    uint64_t {a.name};" for a in op.args]
            out.append("};")
            out.append(f"_Static_assert(sizeof(struct kvmgpu_args_{lower}) == {8 * len(op.args)}, "
                       f'"{op.name} args");')
        if op.results:
            out.append(f"struct __attribute__((packed)) kvmgpu_results_{lower} {{")
            out += [f"    {C_TYPES[r.format]} {r.name};" for r in op.results]
            out.append("};")
            out.append(f"_Static_assert(sizeof(struct kvmgpu_results_{lower}) == {_size(op.result_format)}, "
                       f'"{op.name} results");')
        out.append("")
    out += ["/* The worker's packed launches: `count` launches of one function and shape whose parameter",
            " * bytes lie `stride` bytes apart (kvmgpu/backend/launcher.py packs, launcher.c reads). */",
            "struct kvmgpu_launch_record {"]
    out += _c_fields(spec.LAUNCH_RECORD)
    out += ["};", f"_Static_assert(sizeof(struct kvmgpu_launch_record) == "
            f"{_size(''.join(f for _, f in spec.LAUNCH_RECORD), '=')}, \"launch record\");", "",
            "#endif", ""]
    return "\n".join(out)


# --- docs -----------------------------------------------------------------------------------------

BEGIN, END = "<!-- ops:begin (make gen) -->", "<!-- ops:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "-"


def docs_table() -> str:
    rows = [BEGIN, "",
            "| # | op | forwards | arguments: the host's check | results | blob | queued | sync | waits |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for op in spec.OPS:
        args = "<br>".join(f"`{a.name}`: {a.check}" for a in op.args)
        results = ", ".join(f"`{r.name}` {r.format}" + (f" (new {r.table} handle)" if isinstance(r, NewHandle) else "")
                            for r in op.results)
        blob = f"{op.blob.max}: {op.blob.doc or op.blob.check} ({op.blob.check})" if op.blob else ""
        quota = f"; charges `{op.charges}`" if op.charges else f"; releases `{op.releases}`" if op.releases else ""
        rows.append(f"| {op.id} | `{op.name}` | {_cell(op.cuda)}: {_cell(op.doc)}{quota} | {_cell(args)} | "
                    f"{_cell(results)} | {_cell(blob)} | {'yes' if op.queueable else ''} | "
                    f"{'yes' if op.synchronising else ''} | {op.waits_gpu.replace('_', ' ')} |")
    rows += ["", END]
    return "\n".join(rows)


def protocol_doc(current: str) -> str:
    head, sep, rest = current.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"docs/protocol.md has no {BEGIN} ... {END} markers")
    return head + docs_table() + tail


# --------------------------------------------------------------------------------------------------

def outputs() -> dict[Path, str]:
    doc = REPO / "docs" / "protocol.md"
    return {REPO / "guest-agent" / "kvmgpu_wire" / "ops.py": python_ops(),
            REPO / "guest-agent" / "include" / "kvmgpu_wire.h": c_header(),
            doc: protocol_doc(doc.read_text())}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, text in outputs().items():
        old = path.read_text() if path.exists() else None
        if old == text:
            continue
        stale.append(path.relative_to(REPO))
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if check and stale:
        print("stale generated files (run `make gen`): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    for p in stale:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
