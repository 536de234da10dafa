"""The per-VM worker: serves one channel, validates every guest message, keeps the VM's handle
tables and memory quota, and calls the backend.

    server.py    the process: sockets, event loop, signals, stats file (`Worker`, `serve`)
    channel.py   one channel's host side, sans-IO (`Channel.receive(bytes) -> bytes`)
    vgpu.py      the VM's vGPU: backend context, quota, module cache, windows, sessions, counters
    session.py   one session's handle tables and device memory
    dispatch.py  op handlers: validate, then call the backend
    quota.py, modules.py, windows.py   memory quota, module cache, region windows
"""

from .channel import Channel
from .server import Worker, WorkerConfig, serve
from .vgpu import VGpu

__all__ = ["Channel", "VGpu", "Worker", "WorkerConfig", "serve"]
