"""Write the fuzz harnesses' seed corpus (tests/fuzz/corpus/), once; committed with the harnesses.

    .venv/bin/python tests/fuzz/make_corpus.py

channel/: real client traffic, recorded: tests/kernels/driver_calls.py (every driver call the
guest forwards) run by the guest's one client, libcuda.so.1 (through kvmgpu_guest.driver, in a
child process), its channel a unix socket served here: each write is played on the fuzz harness's
host as a RAW step (a module image the library put in its window as an IMAGE step), its session
number made the script's session 1 on the way in and the library's own on the way out. Then one
script per op: the test module loaded, memory, a stream, an event and a function set up, and that
op, well formed, from the GUEST side, on the channel and posted to the mailbox.

protocol/: the same client's bytes, each write after the HELLO that opens its session.
"""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "kernels")]

from kvmgpu_wire.protocol import HEADER, HEADER_SIZE, Op  # noqa: E402
from kvmgpu_wire.region import Region  # noqa: E402

import guestscript as gs  # noqa: E402
import vgpuhost  # noqa: E402

CORPUS = HERE / "corpus"
SESSION_AT = 4  # the session's u32 in a frame's header (magic, kind, flags, session, seq, length)
_U32 = struct.Struct("<I")


def _frames(buf: bytearray) -> bytes:
    """The whole frames at the front of `buf`, taken out of it."""
    pos = 0
    while len(buf) - pos >= HEADER_SIZE:
        length = HEADER.unpack_from(buf, pos)[5]
        if len(buf) - pos < HEADER_SIZE + length:
            break
        pos += HEADER_SIZE + length
    data = bytes(buf[:pos])
    del buf[:pos]
    return data


def _renumber(data: bytes, old: int | None, new: int) -> tuple[bytes, int | None]:
    """`data`'s frames with session `old` (None: whatever the first one says) made `new`."""
    out, pos = bytearray(data), 0
    while pos + HEADER_SIZE <= len(out):
        session, length = HEADER.unpack_from(out, pos)[3], HEADER.unpack_from(out, pos)[5]
        if old is None:
            old = session
        if session == old:
            _U32.pack_into(out, pos + SESSION_AT, new)
        pos += HEADER_SIZE + length
    return bytes(out), old


class Recorder:
    """The library's channel: each write goes to `host` and into the script."""

    def __init__(self, host: vgpuhost.Host):
        self.host = host
        self.script = bytearray(b"\x00")  # the plain sim backend
        self.writes: list[bytes] = []

    def send(self, data: bytes) -> bytes:
        self._images(data)
        self.writes.append(data)
        self.script += gs.raw(data)
        return self.host.send(data)

    def _images(self, data: bytes) -> None:
        """An IMAGE step for each module the library put in its window before it names it."""
        pos = 0
        while pos + HEADER_SIZE <= len(data):
            _, kind, _, session, _, length = HEADER.unpack_from(data, pos)
            if kind == 3 and struct.unpack_from("<H", data, pos + HEADER_SIZE)[0] == Op.MODULE_LOAD:
                offset, nbytes = struct.unpack_from("<QQ", data, pos + HEADER_SIZE + 4)
                s = self.host.vgpu.sessions.get((self.host.channel.cid, session))
                if nbytes and s is not None:
                    image = bytes(s.window.view[offset: offset + nbytes])
                    if image not in gs.IMAGES and image.endswith(b"\0"):
                        image = image[:-1]  # (PTX with the NUL the library sends)
                    self.script += gs.image(1, gs.IMAGES.index(image), offset, load=False)
            pos += HEADER_SIZE + length


def record(seed: int) -> Recorder:
    tmp = Path(tempfile.mkdtemp(prefix="kvmgpu-corpus-"))
    try:
        region = str(tmp / "region")
        host_region = Region.open_file(region, vgpuhost.REGION, create=True)
        host = vgpuhost.Host(host_region, c_loop=False)
        rec = Recorder(host)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(tmp / "channel.sock"))
        listener.listen(1)
        listener.settimeout(60)
        env = {**os.environ, "KVMGPU_SOCKET": str(tmp / "channel.sock"), "KVMGPU_SHM": region,
               "KVMGPU_MAILBOX": "0"}  # (the mailbox's posts: op_scripts' "-posted" inputs)
        child = subprocess.Popen([sys.executable, str(HERE.parent / "kernels" / "driver_calls.py"), "forwarded",
                                  str(seed)], env=env, stdout=subprocess.PIPE, text=True)
        try:
            conn, _ = listener.accept()
            pending, library = bytearray(), None
            while True:
                select.select([conn], [], [], 60)
                data = conn.recv(1 << 16)
                if not data:
                    break
                pending += data
                frames = _frames(pending)
                if frames:
                    frames, library = _renumber(frames, library, 1)
                    conn.sendall(_renumber(rec.send(frames), 1, library)[0])
            out, _ = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
        assert child.returncode == 0 and '"failed"' not in out, f"driver_calls.py failed: {out}"
        host.finish()
        host_region.close()
        return rec
    finally:
        shutil.rmtree(tmp)


def op_scripts() -> dict[str, bytes]:
    """One script per op: set-up, then that op well formed (queued too where it may be)."""
    a = gs.arg_seen
    setup = (gs.image(1, 0, 0)  # the values seen: 0 the module
             + gs.call(1, Op.MEM_ALLOC, [gs.arg_size(4096)])  # 1, 2: two allocations
             + gs.call(1, Op.MEM_ALLOC, [gs.arg_size(4096)])
             + gs.call(1, Op.STREAM_CREATE, [gs.arg_byte(0)])  # seen 3
             + gs.call(1, Op.EVENT_CREATE, [gs.arg_byte(0)])  # seen 4
             + gs.call(1, Op.EVENT_CREATE, [gs.arg_byte(0)])  # seen 5
             + gs.call(1, Op.MODULE_GET_FUNCTION, [a(0)], gs.blob_name(0)))  # seen 6, 7 (4 params)
    calls = {
        Op.CTX_SYNCHRONIZE: ([], b"\x00"),
        Op.MEM_ALLOC: ([gs.arg_size(1024)], b"\x00"),
        Op.MEM_FREE: ([a(2)], b"\x00"),
        Op.MEM_GET_INFO: ([], b"\x00"),
        Op.MEMCPY_HTOD: ([a(1), gs.arg_window(8192), gs.arg_size(4096), a(3)], b"\x00"),
        Op.MEMCPY_DTOH: ([gs.arg_window(8192), a(1), gs.arg_size(4096), a(3)], b"\x00"),
        Op.MEMCPY_DTOD: ([a(1), a(2), gs.arg_size(4096), gs.arg_byte(0)], b"\x00"),
        Op.MEMSET_D8: ([a(1), gs.arg_byte(7), gs.arg_size(4096), gs.arg_byte(0)], b"\x00"),
        Op.MEMSET_D32: ([a(2), gs.arg_byte(7), gs.arg_size(1024), a(3)], b"\x00"),
        Op.MODULE_LOAD: ([gs.arg_byte(0), gs.arg_byte(0)], gs.blob_sha(0)),
        Op.MODULE_UNLOAD: ([a(0)], b"\x00"),
        Op.MODULE_GET_FUNCTION: ([a(0)], gs.blob_name(1)),
        Op.MODULE_GET_GLOBAL: ([a(0)], gs.blob_name(6)),
        Op.LAUNCH: ([a(6), gs.arg_byte(1), gs.arg_byte(1), gs.arg_byte(1), gs.arg_byte(64),
                     gs.arg_byte(1), gs.arg_byte(1), gs.arg_byte(0), gs.arg_byte(0)], gs.blob_params(3, True)),
        Op.STREAM_CREATE: ([gs.arg_byte(1)], b"\x00"),
        Op.STREAM_DESTROY: ([a(3)], b"\x00"),
        Op.STREAM_SYNCHRONIZE: ([a(3)], b"\x00"),
        Op.STREAM_QUERY: ([a(3)], b"\x00"),
        Op.EVENT_CREATE: ([gs.arg_byte(2)], b"\x00"),
        Op.EVENT_RECORD: ([a(4), a(3)], b"\x00"),
        Op.EVENT_SYNCHRONIZE: ([a(4)], b"\x00"),
        Op.EVENT_QUERY: ([a(4)], b"\x00"),
        Op.EVENT_ELAPSED: ([a(4), a(5)], b"\x00"),
        Op.EVENT_DESTROY: ([a(5)], b"\x00"),
        Op.FENCE: ([], b"\x00"),
        Op.MEMCPY_HTOD_STAGED: ([a(1), gs.arg_window(8192), gs.arg_size(4096), gs.arg_window(4096)], b"\x00"),
        Op.MEMCPY_DTOH_PIECES: ([gs.arg_window(8192), a(1), gs.arg_size(4096), gs.arg_byte(0),
                                 gs.arg_byte(0), gs.arg_window(4096)], b"\x00"),
        Op.FUNC_GET_ATTRIBUTES: ([a(6)], b"\x00"),
        Op.FUNC_SET_ATTRIBUTE: ([a(6), gs.arg_byte(8), gs.arg_size(65536 - 4)], b"\x00"),
        Op.OCCUPANCY_MAX_BLOCKS: ([a(6), gs.arg_byte(128), gs.arg_size(1024), gs.arg_byte(0)], b"\x00"),
        Op.OCCUPANCY_AVAILABLE_SMEM: ([a(6), gs.arg_byte(2), gs.arg_byte(128)], b"\x00"),
        Op.MEMSET_D16: ([a(1), gs.arg_byte(7), gs.arg_size(2048), a(3)], b"\x00"),
        Op.CTX_GET_LIMIT: ([gs.arg_byte(2)], b"\x00"),
        Op.MEMCPY_2D: ([a(2), gs.arg_byte(64), a(1), gs.arg_byte(128), gs.arg_byte(32), gs.arg_byte(16),
                        a(3)], b"\x00"),
        Op.OCCUPANCY_MAX_CLUSTERS: ([a(6), gs.arg_byte(2), gs.arg_byte(1), gs.arg_byte(1), gs.arg_byte(128),
                                     gs.arg_byte(1), gs.arg_byte(1), gs.arg_byte(0), gs.arg_byte(2),
                                     gs.arg_byte(1), gs.arg_byte(1)], b"\x00"),
        Op.TENSOR_MAP_ENCODE_IM2COL: ([gs.arg_byte(0), gs.arg_byte(4), a(1), gs.arg_byte(0), gs.arg_byte(0),
                                       gs.arg_byte(0), gs.arg_byte(0)],
                                      b"\x03" + struct.pack("<H", 124)
                                      + struct.pack("<5Q4Q3i3i5III", 8, 4, 4, 2, 0, 8, 32, 128, 0, 0, 0, 0, 0, 0,
                                                    0, 1, 1, 1, 1, 0, 8, 16)),
        Op.TENSOR_MAP_ENCODE_TILED: ([gs.arg_byte(0), gs.arg_byte(2), a(1), gs.arg_byte(0), gs.arg_byte(0),
                                      gs.arg_byte(0), gs.arg_byte(0)],
                                     b"\x03" + struct.pack("<H", 112)  # raw: the blob's 112 bytes
                                     + struct.pack("<5Q4Q5I5I", 64, 64, 0, 0, 0, 64, 0, 0, 0, 16, 4, 0, 0, 0,
                                                   1, 1, 0, 0, 0)),
    }
    out = {}
    for op, (args, blob) in calls.items():
        queued = gs.OPS[op].queueable
        body = gs.call(1, op, args, blob, queued=queued)
        if queued:
            body += gs.call(1, Op.CTX_SYNCHRONIZE, [])
        out[f"op-{op.name.lower()}"] = b"\x00" + setup + body
        out[f"op-{op.name.lower()}-posted"] = b"\x01" + setup + gs.call(1, op, args, blob, posted=True)
    # batches of launches, behind the C launch loop: a run of launches (records), and a loop of
    # launch + synchronise messages (the second taken by comparing its bytes), on the channel and
    # posted
    launch_args, params = calls[Op.LAUNCH]
    launch = gs.call(1, Op.LAUNCH, launch_args, params, queued=True, held=True)
    out["launch-batch"] = (b"\x01" + setup + launch * 3
                           + gs.call(1, Op.STREAM_SYNCHRONIZE, [gs.arg_byte(0)]))
    for how, posted in (("", False), ("-posted", True)):
        out[f"launch-wait-loop{how}"] = b"\x01" + setup + 3 * (
            launch + gs.call(1, Op.CTX_SYNCHRONIZE, [], posted=posted))
    for name, image in (("small", gs.SMALL_PTX), ("kernels", gs.PTX)):  # the PTX reader's seeds
        out[f"image-{name}-ptx"] = (b"\x00" + gs.image_raw(1, image, 4096)
                                    + gs.call(1, Op.MODULE_GET_GLOBAL, [a(0)], gs.blob_name(7))
                                    + gs.call(1, Op.MODULE_GET_FUNCTION, [a(0)], gs.blob_name(0)))
    return out


def known_findings() -> dict[str, bytes]:
    """Inputs for the bugs issue 19 found before these harnesses (fixed on the i19-worker branch),
    kept as regressions: each failed the harness before its fix."""
    nested = b"[" * 16000  # under HANDSHAKE_MAX; json's RecursionError ended the worker
    hello = HEADER.pack(0x474B, 1, 0, 5, 0, len(nested)) + nested
    return {
        "protocol/hello-nested-deep": b"\x00\x00" + hello,
        "channel/hello-nested-deep": b"\x00" + gs.raw(hello),
        # session 2 negotiates 4096-byte frames; session 1's legal 6 KB launch closed the channel
        "channel/frame-limit-of-another-session": (
            b"\x00" + gs.hello(2, 0, 1) + gs.call(1, Op.LAUNCH, [gs.arg_byte(1)] * 9,
                                             b"\x03" + struct.pack("<H", 6000) + bytes(6000))),
    }


def write(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def main() -> None:
    for sub in ("channel", "protocol"):
        shutil.rmtree(CORPUS / sub, ignore_errors=True)
    recorded = {"driver-calls": record(1)}
    for name, rec in recorded.items():
        write(CORPUS / "channel", name, bytes(rec.script))
    for name, data in op_scripts().items():
        write(CORPUS / "channel", name, data)
    for name, data in known_findings().items():
        harness, name = name.split("/")
        write(HERE / "regressions" / harness, name, data)
    rec = recorded["driver-calls"]
    hello, seen = rec.writes[0], set()
    for i, data in enumerate(rec.writes[1:]):
        key = hashlib.sha256(data).digest()
        if key in seen or len(data) > 4096:
            continue
        seen.add(key)
        write(CORPUS / "protocol", f"driver-calls-{i:03d}", bytes([0, i & 0xFF]) + hello + data)
    print(f"{len(list((CORPUS / 'channel').iterdir()))} channel and "
          f"{len(list((CORPUS / 'protocol').iterdir()))} protocol inputs in {CORPUS}")


if __name__ == "__main__":
    main()
