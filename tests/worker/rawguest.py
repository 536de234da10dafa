"""The worker tests' guest: a guest client speaking the raw protocol to a host channel,
either in memory (no sockets) or over a real `kvmgpu worker` process's socket."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from kvmgpu.backend.sim import SimBackend
from kvmgpu.worker import Channel, VGpu
from kvmgpu_wire.protocol import NEED_DATA, Connection, Hello, Op, Reply, Role, Welcome
from kvmgpu_wire.region import Region

KERNELS = Path(__file__).resolve().parent.parent / "kernels"
PTX = (KERNELS / "kernels.ptx").read_bytes()
PTX_SHA = hashlib.sha256(PTX).digest()
MIB = 1 << 20


class Guest:
    """One guest session on a channel. `transport(bytes) -> bytes` carries frames to the host and
    returns what came back; `region` is the guest's mapping of the shared region."""

    def __init__(self, transport, region: Region, session: int = 1):
        self.transport = transport
        self.region = region
        self.session = session
        self.conn = Connection(Role.CLIENT)
        self.welcome: Welcome | None = None

    def _events(self, data: bytes):
        self.conn.receive_data(data) if data else None
        out = []
        while (ev := self.conn.next_event()) is not NEED_DATA:
            out.append(ev)
        return out

    def hello(self, window: int = 0, **kw):
        events = self._events(self.transport(self.conn.send(Hello(self.session, window=window, **kw))))
        assert len(events) == 1, events
        if isinstance(events[0], Welcome):
            self.welcome = events[0]
            self.window = self.region.window(self.welcome.window_offset, self.welcome.window_size)
        return events[0]

    def frame(self, op: Op, *args, blob: bytes = b"", queued: bool = False) -> bytes:
        """A call's frame, to be sent with others in one piece (`send`)."""
        return self.conn.send_call(self.session, self.conn.next_seq(), op, args, blob, queued)

    def send(self, frames: list[bytes]) -> list:
        """Several frames in one write, as the guest's batches go; the replies that came back."""
        return self._events(self.transport(b"".join(frames)))

    def call(self, op: Op, *args, blob: bytes = b"", queued: bool = False) -> Reply | None:
        frame = self.conn.send_call(self.session, self.conn.next_seq(), op, args, blob, queued)
        events = self._events(self.transport(frame))
        if queued:
            assert events == []
            return None
        assert len(events) == 1, events
        return events[0]

    def ok(self, op: Op, *args, **kw) -> tuple:
        r = self.call(op, *args, **kw)
        assert r.status == 0, (op.name, r.status, r.blob)
        return r.values

    # --- conveniences ---
    def alloc(self, n: int) -> int:
        return self.ok(Op.MEM_ALLOC, n)[0]

    def put(self, dptr: int, data: bytes, offset: int = 0) -> None:
        self.window.view[offset: offset + len(data)] = data
        self.ok(Op.MEMCPY_HTOD, dptr, offset, len(data), 0)

    def get(self, dptr: int, n: int, offset: int = 0) -> bytes:
        self.ok(Op.MEMCPY_DTOH, offset, dptr, n, 0)
        return bytes(self.window.view[offset: offset + n])

    def load(self, image: bytes = PTX, offset: int = 0) -> int:
        self.window.view[offset: offset + len(image)] = image
        return self.ok(Op.MODULE_LOAD, offset, len(image), blob=hashlib.sha256(image).digest())[0]

    def function(self, module: int, name: str) -> tuple[int, int]:
        return self.ok(Op.MODULE_GET_FUNCTION, module, blob=name.encode())


def floats(values) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def unfloats(data: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(data) // 4}f", data))


class Host:
    """A VGpu on the sim backend, in process; `channel()` opens a channel with a Guest on it."""

    def __init__(self, tmp_path: Path, gmem: int = 16 * MIB, region_size: int = 4 * MIB,
                 backend=SimBackend):
        self.region = Region.open_file(str(tmp_path / "region"), region_size, create=True)
        self.guest_region = Region.open_file(str(tmp_path / "region"))
        self.vgpu = VGpu(lambda: backend(total_memory=gmem), gmem, self.region, vm="test")
        self._cid = 0
        self.guests: list[Guest] = []

    def channel(self) -> Channel:
        self._cid += 1
        return Channel(self.vgpu, self._cid)

    def guest(self, window: int = 0, session: int = 1, channel: Channel | None = None,
              **hello) -> Guest:
        ch = channel or self.channel()
        g = Guest(ch.receive, self.guest_region, session)
        self.guests.append(g)
        g.channel = ch
        assert isinstance(g.hello(window, **hello), Welcome)
        return g

    def close(self):
        vg = self.vgpu  # what the worker counts it holds is what its sessions hold
        assert vg.objects == sum(s.objects for s in vg.sessions.values()), vg.objects
        for g in self.guests:
            if g.welcome is not None:
                g.window.view.release()
        self.vgpu.close()
        self.region.close()
        self.guest_region.close()
