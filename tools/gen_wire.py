"""Write what is generated from the op specification (guest-agent/kvmgpu_wire/spec.py).

    python3 tools/gen_wire.py           # rewrite the generated files (`make gen`)
    python3 tools/gen_wire.py --check   # exit 1, naming them, when any is stale (a test runs this)

Generated: the Python op tables (guest-agent/kvmgpu_wire/ops.py), the C header both C pieces
include (guest-agent/include/kvmgpu_wire.h: frame layout, kinds, op ids, each op's argument and
result structs, the launch record, with static asserts of every size), the guest's C call stubs
(kvmgpu_calls.h), CUDA's result codes for the guest library (kvmgpu_cuda.h, from
kvmgpu_wire/cudefs.py), and the op table of
docs/protocol.md (between its `ops:begin` and `ops:end` markers).
"""

from __future__ import annotations

import struct
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "guest-agent"))

from kvmgpu_wire import cudefs, kinds, spec
from kvmgpu_wire.kinds import NewHandle

BANNER = "generated from guest-agent/kvmgpu_wire/spec.py by tools/gen_wire.py (make gen): do not edit"
C_TYPES = {"B": "uint8_t", "H": "uint16_t", "I": "uint32_t", "Q": "uint64_t", "i": "int32_t", "f": "float",
           "s": "char"}


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
           f"MAX_NAME = {spec.MAX_NAME}",
           f"HANDSHAKE_MAX = {spec.HANDSHAKE_MAX}",
           f"DEFAULT_MAX_FRAME = {spec.DEFAULT_MAX_FRAME}",
           f"MAX_ERROR_TEXT = {spec.MAX_ERROR_TEXT}",
           f"WINDOW_ALIGN = {spec.WINDOW_ALIGN}",
           f"MAILBOX_BYTES = {spec.MAILBOX_BYTES}",
           f"MAILBOX_MIN_WINDOW = {spec.MAILBOX_MIN_WINDOW}",
           *(f"MAILBOX_{name} = {index}" for name, index in spec.MAILBOX_WORDS),
           f"MAILBOX_HEAD = {spec.MAILBOX_HEAD}",
           f"MAILBOX_REQUEST_MAX = {spec.MAILBOX_REQUEST_MAX}",
           f'PARAM_FORMAT = "<{"".join(f for _, f in spec.PARAM)}"',
           f'AGENT_REGION_INFO_FORMAT = "<{"".join(f for _, f in spec.AGENT_REGION_INFO)}"',
           f'PROCESS_FORMAT = "<{"".join(f for _, f in spec.PROCESS)}"',
           f"MAX_PROCESSES = {spec.MAX_PROCESSES}", "", "",
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
           f"#define KVMGPU_MAX_NAME {spec.MAX_NAME}",
           f"#define KVMGPU_HANDSHAKE_MAX {spec.HANDSHAKE_MAX}",
           f"#define KVMGPU_DEFAULT_MAX_FRAME {spec.DEFAULT_MAX_FRAME}",
           f"#define KVMGPU_MAX_ERROR_TEXT {spec.MAX_ERROR_TEXT}",
           f"#define KVMGPU_WINDOW_ALIGN {spec.WINDOW_ALIGN}",
           f"#define KVMGPU_MAILBOX_BYTES {spec.MAILBOX_BYTES}",
           f"#define KVMGPU_MAILBOX_MIN_WINDOW {spec.MAILBOX_MIN_WINDOW}",
           *(f"#define KVMGPU_MAILBOX_{name} {index}" for name, index in spec.MAILBOX_WORDS),
           f"#define KVMGPU_MAILBOX_HEAD {spec.MAILBOX_HEAD}",
           f"#define KVMGPU_MAILBOX_REQUEST_MAX {spec.MAILBOX_REQUEST_MAX}",
           f"#define KVMGPU_MAX_PROCESSES {spec.MAX_PROCESSES}", "",
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
            out += _c_fields((r.name, r.format) for r in op.results)
            out.append("};")
            out.append(f"_Static_assert(sizeof(struct kvmgpu_results_{lower}) == {_size(op.result_format)}, "
                       f'"{op.name} results");')
        out.append("")
    out += ["/* One kernel parameter in MODULE_GET_FUNCTION's reply blob (an array of them). */",
            "struct kvmgpu_param {"]
    out += _c_fields(spec.PARAM)
    out += ["};", f"_Static_assert(sizeof(struct kvmgpu_param) == {_size(''.join(f for _, f in spec.PARAM))}, "
            '"param");', "",
            "/* What the guest agent sends with the region's fd (SCM_RIGHTS) to a process that connects. */",
            "struct kvmgpu_agent_region_info {"]
    out += _c_fields(spec.AGENT_REGION_INFO)
    out += ["};", f"_Static_assert(sizeof(struct kvmgpu_agent_region_info) == "
            f"{_size(''.join(f for _, f in spec.AGENT_REGION_INFO))}, \"agent region info\");", "",
            "/* One guest process in VGPU_PROCESSES' reply blob (an array of them). */",
            "struct kvmgpu_process {"]
    out += _c_fields(spec.PROCESS)
    out += ["};", f"_Static_assert(sizeof(struct kvmgpu_process) == {_size(''.join(f for _, f in spec.PROCESS))}, "
            '"process");', ""]
    out += ["/* The worker's packed launches: `count` launches of one function and shape whose parameter",
            " * bytes lie `stride` bytes apart (kvmgpu/backend/launcher.py packs, launcher.c reads). */",
            "struct kvmgpu_launch_record {"]
    out += _c_fields(spec.LAUNCH_RECORD)
    out += ["};", f"_Static_assert(sizeof(struct kvmgpu_launch_record) == "
            f"{_size(''.join(f for _, f in spec.LAUNCH_RECORD), '=')}, \"launch record\");", "",
            "#endif", ""]
    return "\n".join(out)


# --- the worker's checked requests -----------------------------------------------------------------

def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _length_expr(d: spec.OpDecl, a) -> str:
    if isinstance(a.length, int):
        return str(a.length)
    n = f"a_{a.length}"
    return n if getattr(a, "scale", 1) == 1 else f"{n} * {a.scale}"


def _check(d: spec.OpDecl, a) -> tuple[str, str]:
    """(the statement that checks argument `a` of op `d`, the request field's comment)."""
    v = f"a_{a.name}"
    if isinstance(a, kinds.Handle):
        null = ", null=True" if a.null else ""
        return (f'{a.name} = s.lookup("{a.table}", {v}, "{a.name}"{null})',
                f"the object of handle {a.name} in the session's {a.table}")
    if isinstance(a, kinds.Allocation):
        return f'{a.name} = checks.allocation(s, {v}, "{a.name}")', "the allocation's range (None for 0)"
    if isinstance(a, kinds.DevicePtr):
        return (f'{a.name} = checks.device_range(s, {v}, {_length_expr(d, a)}, "{a.name}")',
                f"[{a.name}, +{a.length}) is inside one of the session's ranges")
    if isinstance(a, kinds.WindowOffset):
        align = f", {a.align}" if a.align > 1 else ""
        return (f'{a.name} = checks.window(s, {v}, {_length_expr(d, a)}, "{a.name}"{align})',
                "the region offset of the window range")
    if isinstance(a, kinds.Length):
        if a.min or a.max < 2**64 - 1:
            high = f", {a.max:#x}" if a.max < 2**64 - 1 else ""
            hint = f", hint={a.hint!r}" if a.hint else ""
            return f'{a.name} = checks.length({v}, "{a.name}", {a.min}{high}{hint})', f"{a.check}"
        return f"{a.name} = {v}", "bounded by the ranges that use it"
    if isinstance(a, kinds.Flags):
        return f'{a.name} = checks.flags({v}, {a.mask:#x}, "{a.name}")', a.check
    if isinstance(a, kinds.Value):
        if a.max < 2**64 - 1:
            return f'{a.name} = checks.value({v}, {a.max:#x}, "{a.name}")', a.check
        return f"{a.name} = {v}", "any value"
    raise SystemExit(f"{d.name}: no generated check for {type(a).__name__} {a.name}: declare it manual")


def _field_order(d: spec.OpDecl, fields: list[str]) -> list[str]:
    """The request's fields in declaration order (the checks ran in another)."""
    order = []
    for a in d.args:
        if isinstance(a, kinds.Allocation):
            order += [f"a_{a.name}", f"{a.name}_range"]
        elif isinstance(a, kinds.Handle):
            order += [a.name, f"a_{a.name}"]
        else:
            order.append(a.name)
    return order + [f for f in fields if f not in order]


def python_requests() -> str:
    out = ['"""The worker\'s checked requests.',
           "",
           f"{BANNER[0].upper()}{BANNER[1:]}.",
           "",
           "For every op whose arguments their kinds fully check, a request type (the checked, resolved",
           "arguments a handler works with) and the function that builds it from a call, or raises",
           "CudaError with the error the kind documents (kvmgpu/worker/checks.py). `CHECKS[op]` is that",
           "function, None for the ops whose handlers check their arguments themselves (the",
           'specification says why). `THIN` are the ops whose handler is one backend call."""',
           "", "from __future__ import annotations", "", "from typing import NamedTuple", "",
           "from kvmgpu_wire.protocol import Call, Op", "",
           "from . import checks", "from .session import Session", ""]
    table = []
    for d in spec.OPS:
        if d.manual:
            table.append(f"    Op.{d.name}: None,  # {d.manual}")
            continue
        cls = _camel(d.name)
        doc = textwrap.wrap(f'"""{d.name}: {d.doc}."""', 116)
        out += ["", f"class {cls}(NamedTuple):"] + [f"    {line}" for line in doc] + [""]
        lines = [_check(d, a) for a in d.args]
        for a, (_, why) in zip(d.args, lines):
            if isinstance(a, kinds.Allocation):
                out.append(f"    {a.name}: int  # as the guest sent it")
                out.append(f"    {a.name}_range: object  # {why}")
                continue
            typ = "object" if isinstance(a, kinds.Handle) else "int"
            if a.name in ("count", "index"):  # a field hides tuple's method: fine, requests are read by name
                why = f"type: ignore[assignment]  # (hides tuple.{a.name}) {why}"
            out.append(f"    {a.name}: {typ}  # {why}")
            if isinstance(a, kinds.Handle):
                out.append(f"    {a.name}_handle: int  # as the guest sent it")
        if isinstance(d.blob, kinds.Name):
            out.append("    name: str  # the blob: UTF-8, not empty, no NUL")
        if not d.args and not d.blob:
            out.pop()  # (the docstring's blank line: nothing follows it)
        out += ["", "", f"def {d.name.lower()}(s: Session, call: Call) -> {cls}:"]
        if d.args:
            names = ", ".join(f"a_{a.name}" for a in d.args)
            out.append(f"    {names}{',' if len(d.args) == 1 else ''} = call.args")
        for r in d.results:
            if isinstance(r, NewHandle):
                out.append(f'    checks.room(s, "{r.table}")')
        fields = []
        # the numbers' own bounds first (cheap, and their errors say the most), then the handles
        # and ranges in the declared order
        scalar = (kinds.Length, kinds.Flags, kinds.Value)
        for a, (stmt, _) in sorted(zip(d.args, lines), key=lambda p: not isinstance(p[0], scalar)):
            if isinstance(a, kinds.Allocation):
                out.append(f"    {stmt.replace(a.name + ' = ', a.name + '_range = ', 1)}")
                fields += [f"a_{a.name}", f"{a.name}_range"]
                continue
            out.append(f"    {stmt}")
            fields.append(a.name)
            if isinstance(a, kinds.Handle):
                fields.append(f"a_{a.name}")
        if isinstance(d.blob, kinds.Name):
            out.append("    name = checks.symbol(call.blob)")
            fields.append("name")
        out.append(f"    return {cls}({', '.join(_field_order(d, fields))})")
        out.append("")
        table.append(f"    Op.{d.name}: {d.name.lower()},")
    out += ["", "CHECKS = {"] + table + ["}", "",
            "# op: (the backend method, the request fields it takes, how many results it returns)",
            "THIN = {"]
    for d in spec.OPS:
        if d.backend:
            method, fields = d.thin_call
            out.append(f"    Op.{d.name}: ({method!r}, {fields!r}, {len(d.results)}),")
    out += ["}", ""]
    return "\n".join(out)


def c_calls() -> str:
    """The guest's stubs: one function an op, which packs its arguments and hands them to the
    library's transport (`kvmgpu_call`, which the guest library defines)."""
    out = [f"/* The guest's call stubs ({BANNER}). */",
           "#ifndef KVMGPU_CALLS_H", "#define KVMGPU_CALLS_H", "", "#include <stddef.h>",
           '#include "kvmgpu_wire.h"', "",
           "struct kvmgpu_client;",
           "/* Sends op `op` with `nargs` arguments and a blob; `queued`: no reply (its error comes with",
           " * the next synchronising call). Otherwise waits for the reply: its status (a CUresult), its",
           " * results copied to `results` (`results_size` bytes) and its blob to `reply_blob` (at most",
           " * `*reply_blob_size` bytes; the size it had is stored back). Defined by the library. */",
           "int kvmgpu_call(struct kvmgpu_client *c, enum kvmgpu_op op, const uint64_t *args, unsigned nargs,",
           "                const void *blob, size_t blob_size, int queued, void *results, size_t results_size,",
           "                void *reply_blob, size_t *reply_blob_size);", ""]
    for op in spec.OPS:
        lower = op.name.lower()
        params = ["struct kvmgpu_client *c"] + [f"uint64_t {a.name}" for a in op.args]
        if op.blob:
            params += ["const void *blob", "size_t blob_size"]
        if op.queueable:
            params.append("int queued")
        if op.results:
            params.append(f"struct kvmgpu_results_{lower} *out")
        if op.reply_blob:
            params += ["void *reply_blob", "size_t *reply_blob_size"]
        out.append(f"/* {op.name}: {op.cuda}: {op.doc}. */")
        out.append(f"static inline int kvmgpu_{lower}({', '.join(params)})")
        out.append("{")
        if op.args:
            out.append(f"    const uint64_t args[{len(op.args)}] = {{{', '.join(a.name for a in op.args)}}};")
        call = [f"KVMGPU_OP_{op.name}", "args" if op.args else "NULL", str(len(op.args)),
                "blob" if op.blob else "NULL", "blob_size" if op.blob else "0",
                "queued" if op.queueable else "0",
                "out" if op.results else "NULL", "sizeof *out" if op.results else "0",
                "reply_blob" if op.reply_blob else "NULL",
                "reply_blob_size" if op.reply_blob else "NULL"]
        out.append(f"    return kvmgpu_call(c, {', '.join(call)});")
        out += ["}", ""]
    out += ["#endif", ""]
    return "\n".join(out)


def c_cuda() -> str:
    """The CUDA driver's result codes as the guest library reports them: the enum, and each code's
    name and text (cuGetErrorName, cuGetErrorString), from kvmgpu_wire/cudefs.py."""
    out = ["/* CUDA's result codes (generated from guest-agent/kvmgpu_wire/cudefs.py by tools/gen_wire.py"
           " (make gen): do not edit). */",
           "#ifndef KVMGPU_CUDA_H", "#define KVMGPU_CUDA_H", "",
           "enum kvmgpu_cuda_result {"]
    out += [f"    KVMGPU_{r.name} = {int(r)}," for r in cudefs.CUresult]
    out += ["};", "", "struct kvmgpu_cuda_result_name {", "    int code;", "    const char *name;",
            "    const char *text;", "};", "",
            "/* Every code, ascending, with cuGetErrorName's and cuGetErrorString's answers. */",
            "static const struct kvmgpu_cuda_result_name kvmgpu_cuda_results[] = {"]
    for r in sorted(cudefs.CUresult, key=int):
        out.append(f'    {{{int(r)}, "{r.name}", "{cudefs.error_text(int(r))}"}},')
    out += ["};", "",
            f"#define KVMGPU_CU_DEVICE_ATTRIBUTE_MAX {int(cudefs.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX)}",
            f"#define KVMGPU_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR "
            f"{int(cudefs.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)}",
            f"#define KVMGPU_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR "
            f"{int(cudefs.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)}",
            "", "#endif", ""]
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
        results = ", ".join(f"`{r.name}` {r.format}" + (f" (new {r.table} handle)" if isinstance(r, NewHandle)
                                                        else " (a new range of the session)"
                                                        if isinstance(r, kinds.NewRange) else "")
                            for r in op.results)
        blob = f"{op.blob.max}: {op.blob.doc or op.blob.check} ({op.blob.check})" if op.blob else ""
        if op.reply_blob:
            results += f"; reply blob: {op.reply_blob}"
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
            REPO / "guest-agent" / "include" / "kvmgpu_calls.h": c_calls(),
            REPO / "guest-agent" / "include" / "kvmgpu_cuda.h": c_cuda(),
            REPO / "kvmgpu" / "worker" / "requests.py": python_requests(),
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
