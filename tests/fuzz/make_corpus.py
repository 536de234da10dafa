"""Write the fuzz harnesses' seed corpus (tests/fuzz/corpus/), once; committed with the harnesses.

    .venv/bin/python tests/fuzz/make_corpus.py

channel/: real client traffic, recorded: tests/kernels/driver_calls.py (every driver call the
guest forwards) run in this process by the guest's own driver (kvmgpu_guest.driver), its channel
a transport that plays each write on the fuzz harness's host as a RAW step (a module image the
client put in its window as an IMAGE step), once through the channel only and once with the
mailbox (its posts as POST steps). Then one script per op: the test module loaded, memory,
a stream, an event and a function set up, and that op, well formed, from the GUEST side.

protocol/: the same client's bytes, each write after the HELLO that opens its session.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "kernels")]

from kvmgpu_guest import driver  # noqa: E402
from kvmgpu_guest.config import GuestConfig  # noqa: E402
from kvmgpu_wire.protocol import HEADER, HEADER_SIZE, Op  # noqa: E402
from kvmgpu_wire.region import Region  # noqa: E402

import driver_calls  # noqa: E402
import guestscript as gs  # noqa: E402
import vgpuhost  # noqa: E402

CORPUS = HERE / "corpus"


class Recorder:
    """The guest client's transport: each write goes to `host` and into the script."""

    def __init__(self, host: vgpuhost.Host):
        self.host = host
        self.script = bytearray(b"\x00")  # the plain sim backend
        self.writes: list[bytes] = []
        self.out = bytearray()

    def send(self, data) -> None:
        data = bytes(data)
        self._images(data)
        self.writes.append(data)
        self.script += gs.raw(data)
        self.out += self.host.send(data)

    def _images(self, data: bytes) -> None:
        """An IMAGE step for each module the client put in its window before it names it."""
        pos = 0
        while pos + HEADER_SIZE <= len(data):
            _, kind, _, session, _, length = HEADER.unpack_from(data, pos)
            if kind == 3 and struct.unpack_from("<H", data, pos + HEADER_SIZE)[0] == Op.MODULE_LOAD:
                offset, nbytes = struct.unpack_from("<QQ", data, pos + HEADER_SIZE + 4)
                s = self.host.vgpu.sessions.get((self.host.channel.cid, session))
                if nbytes and s is not None:
                    image = bytes(s.window.view[offset: offset + nbytes])
                    self.script += gs.image(1, gs.IMAGES.index(image), offset, load=False)
            pos += HEADER_SIZE + length

    def recv(self, max_bytes: int) -> bytes:
        if not self.out:
            self._serve_post()
        assert self.out, "the client waits for bytes the host did not send"
        data = bytes(self.out[:max_bytes])
        del self.out[:max_bytes]
        return data

    def _serve_post(self) -> None:
        """What the worker's loop does for a post: take it, answer it in the mailbox and ring."""
        s = self.host.vgpu.sessions.get((self.host.channel.cid, 1))
        box = s.mailbox if s is not None else None
        if box is None or not box.posted():
            return
        size = box.words[1]
        body = bytes(box.request[:size])
        box.words[0] = box.number  # host.post posts it again, as the script will
        self.script += gs.post(1, body)
        self.host.post(0, size, body)
        self.out += s.doorbell

    def close(self) -> None:
        pass


def record(mailbox: bool, seed: int) -> Recorder:
    tmp = Path(tempfile.mkdtemp(prefix="kvmgpu-corpus-"))
    try:
        host_region = Region.open_file(str(tmp / "region"), vgpuhost.REGION, create=True)
        host = vgpuhost.Host(host_region, c_loop=False)
        rec = Recorder(host)

        config = replace(GuestConfig.from_environ(), mailbox=mailbox)

        def connect(cls, socket_path=None, shm_path=None, client="", config=config):
            s = cls(rec, Region.open_file(str(tmp / "region")), "kvmgpu-guest corpus", session_id=1,
                    config=config)
            s.handshake(0)
            return s

        driver._reset_for_tests()
        saved = driver.Session.connect
        driver.Session.connect = classmethod(connect)
        try:
            driver_calls.run(driver, seed)
            driver._reset_for_tests()
        finally:
            driver.Session.connect = saved
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
    os.environ.setdefault("KVMGPU_POLL_US", "1")
    recorded = {"driver-calls": record(False, 1), "driver-calls-mailbox": record(True, 2)}
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
