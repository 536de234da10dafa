"""The `kvmgpu-guest` command: run a CUDA program on the vGPU, show the vGPU, serve the agent.

    kvmgpu-guest run [--socket S --shm F] -- PROG ARGS...
    kvmgpu-guest info [--json] [--socket S --shm F]
    kvmgpu-guest agent [--port P --region R --listen SOCKET]
    kvmgpu-guest register | unregister      (as root: the native libraries for every program)

Errors are one line, `kvmgpu-guest: <what> (<hint>)`, and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from kvmgpu_wire.protocol import PROTOCOL_VERSION

from . import __version__
from .config import ConfigError, GuestConfig

SHIM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")
LIB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")  # libcuda.so.1, where it was built


def native_library(name: str = "libcuda.so.1", symbol: str = "cuGetProcAddress_v2") -> dict:
    """A native library this package carries (libcuda.so.1, libnvidia-ml.so.1): its path (None
    where it was not built: no C compiler at install) and whether it loads."""
    path = os.path.join(LIB_DIR, name)
    if not os.path.exists(path):
        return {"path": None, "loads": False}
    import ctypes
    try:
        lib = ctypes.CDLL(path)
        loads = hasattr(lib, symbol)
    except OSError:
        loads = False
    return {"path": path, "loads": loads}


class CliError(Exception):
    """What went wrong, a hint, and the exit status."""

    def __init__(self, what: str, hint: str = "", code: int = 1):
        super().__init__(what)
        self.what, self.hint, self.code = what, hint, code


# ------------------------------------------------------------------------------------------- run

def run_command(args) -> int:
    argv = list(args.program)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise CliError("no program to run", "kvmgpu-guest run -- python app.py", 2)
    env = dict(os.environ)
    if args.socket:
        env["KVMGPU_SOCKET"] = args.socket
    if args.shm:
        env["KVMGPU_SHM"] = args.shm
    if env.get("KVMGPU_SOCKET") and not env.get("KVMGPU_SHM"):
        raise CliError("a socket is named but no shared region", "pass --shm or set KVMGPU_SHM", 2)
    try:  # the program's client reads these when it connects: say now what is wrong with them
        GuestConfig.from_environ(env)
    except ConfigError as e:
        raise CliError(str(e), "fix the variable or unset it (docs/guest.md lists them)", 2) from e
    # kvmgpu_guest itself must stay importable from the program, wherever the program runs
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [SHIM_DIR, package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # native programs (linked with -lcuda, or loading libcuda.so.1) find this package's library first
    if os.path.exists(os.path.join(LIB_DIR, "libcuda.so.1")):
        libs = [LIB_DIR] + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(libs))
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError as e:
        raise CliError(f"{argv[0]}: command not found", "give the program's path or put it on PATH", 127) from e
    except PermissionError as e:
        raise CliError(f"{argv[0]}: permission denied", "is it executable?", 126) from e
    return 0  # not reached


# ------------------------------------------------------------------------------------------ info

def _driver_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def vgpu_info(socket_path: str | None = None, shm_path: str | None = None) -> dict:
    """The vGPU as this guest sees it: the WELCOME's device and vGPU, and cuMemGetInfo."""
    from kvmgpu_wire.protocol import Op, ProtocolError

    from .channel import ChannelError
    from .client import Session, SessionError

    try:
        session = Session.connect(socket_path, shm_path, client=f"kvmgpu-guest info {__version__}", role="monitor")
    except ConfigError as e:
        raise CliError(str(e), "fix the variable or unset it (docs/guest.md lists them)", 2) from e
    except ChannelError as e:
        raise CliError(str(e), "is this a VM with a kvmgpu vGPU attached? outside one, pass --socket and --shm") from e
    except (SessionError, ProtocolError, OSError) as e:
        raise CliError(f"the host did not accept a session: {e}", "is the host's kvmgpu worker running?") from e
    try:
        reply = session.call(Op.MEM_GET_INFO)
        if reply.status:
            raise CliError(f"cuMemGetInfo failed with CUresult {reply.status}", "see the worker's log on the host")
        free, total = reply.values
        utilization, processes = _usage(session)
        dev, vgpu = session.device, session.vgpu
        assert session.welcome is not None  # connect() shook hands
        return {
            "name": dev.get("name"),
            "uuid": dev.get("uuid"),
            "compute_capability": list(dev.get("compute_capability") or []),
            "driver_version": _driver_version(int(dev.get("driver_version", 0))),
            "memory_total": total,
            "memory_used": total - free,
            "memory_free": free,
            "utilization_gpu": utilization,
            "processes": processes,
            "compute": vgpu.get("compute"),
            "compute_mode": vgpu.get("compute_mode"),
            "backend": vgpu.get("backend"),
            "vm": vgpu.get("vm"),
            "protocol_version": session.welcome.version,
            "window_bytes": session.window_size,
            "guest_agent_version": __version__,
            "native_library": native_library(),
            "nvml_library": native_library("libnvidia-ml.so.1", "nvmlInit_v2"),
        }
    except SessionError as e:
        raise CliError(f"lost the session: {e}", "is the host's kvmgpu worker running?") from e
    finally:
        session.close("info done")


def _usage(session) -> tuple[int, list[dict]]:
    """This VM's GPU utilisation (percent) and its processes, as the guest's NVML reports them."""
    import struct

    from kvmgpu_wire.ops import PROCESS_FORMAT
    from kvmgpu_wire.protocol import Op

    reply = session.call(Op.VGPU_UTILIZATION)
    if reply.status:
        raise CliError(f"the vGPU's utilisation failed with CUresult {reply.status}",
                       "see the worker's log on the host")
    gpu = reply.values[0]
    reply = session.call(Op.VGPU_PROCESSES)
    if reply.status:
        raise CliError(f"the vGPU's process list failed with CUresult {reply.status}",
                       "see the worker's log on the host")
    entries = struct.iter_unpack(PROCESS_FORMAT, reply.blob[:reply.values[0] * struct.calcsize(PROCESS_FORMAT)])
    return gpu, [{"pid": pid, "sessions": n, "memory_used": used} for pid, n, used in entries]


def _library_line(lib: dict) -> str:
    if not lib["path"]:
        return "not built (no C compiler when kvmgpu-guest was installed): only Python programs run"
    return f"{lib['path']} ({'loads' if lib['loads'] else 'does NOT load'}; `kvmgpu-guest run` puts it first)"


def info_command(args) -> int:
    info = vgpu_info(args.socket, args.shm)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    used_pct = 100.0 * info["memory_used"] / info["memory_total"] if info["memory_total"] else 0.0
    backend = info["backend"] or "?"
    if backend == "sim":
        backend += " (development backend: no GPU, test kernels only)"
    cc = ".".join(str(x) for x in info["compute_capability"]) or "?"
    rows = [
        ("vGPU", f"{info['name']}  {info['uuid']}"),
        ("compute capability", cc),
        ("memory", f"{_mib(info['memory_used'])} / {_mib(info['memory_total'])} used ({used_pct:.1f}%), "
                   f"{_mib(info['memory_free'])} free"),
        ("utilisation", f"{info['utilization_gpu']}% over the last second (this VM's GPU time)"),
        ("processes", ", ".join(f"{p['pid']} ({_mib(p['memory_used'])})" for p in info["processes"]) or "none"),
        ("compute share", f"{info['compute']}% ({info['compute_mode']})"),
        ("backend", backend),
        ("VM", info["vm"] or "-"),
        ("driver version", info["driver_version"]),
        ("protocol version", str(info["protocol_version"])),
        ("kvmgpu-guest", info["guest_agent_version"]),
        ("libcuda.so.1", _library_line(info["native_library"])),
        ("libnvidia-ml.so.1", _library_line(info["nvml_library"])),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


# ----------------------------------------------------------------------------------------- agent

def agent_command(args) -> int:
    from . import agent
    from .channel import find_ivshmem, find_port

    port = args.port or find_port()
    if port is None:
        raise CliError("no virtio-serial port org.kvmgpu.0",
                       "is a vGPU attached to this VM? (kvmgpu attach on the host)")
    region = args.region
    if region is None:
        pci = find_ivshmem()
        if pci is None:
            raise CliError("no ivshmem-plain PCI device (1af4:1110)", "is a vGPU attached to this VM?")
        region = os.path.join(pci, "resource2")
    try:
        agent.run_agent(port, region, args.listen)
    except OSError as e:
        raise CliError(f"the agent could not start: {e}", "run it as root (it opens the VM's devices)") from e
    return 0


# ------------------------------------------------------------------------------ register

def register_command(args) -> int:
    from .register import CONF, RegisterError, register
    try:
        result = register(LIB_DIR, args.conf or CONF)
    except RegisterError as e:
        raise CliError(e.what, e.hint) from None
    print(f"{'wrote' if result['changed'] else 'kept'} {result['conf']}; the loader now finds:")
    for name, path in result["resolved"].items():
        mine = path is not None and os.path.dirname(path) == LIB_DIR
        print(f"  {name} => {path or 'nothing'}" + ("" if mine else "   (NOT this package's: another comes first)"))
    if not all(p is not None and os.path.dirname(p) == LIB_DIR for p in result["resolved"].values()):
        return 1
    return 0


def unregister_command(args) -> int:
    from .register import CONF, RegisterError, unregister
    try:
        removed = unregister(args.conf or CONF)
    except RegisterError as e:
        raise CliError(e.what, e.hint) from None
    print(f"removed {args.conf or CONF}" if removed else "not registered; nothing changed")
    return 0


# ------------------------------------------------------------------------------------------ main

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvmgpu-guest", description="kvmgpu guest agent: the vGPU in this VM.")
    p.add_argument("--version", action="version", version=f"kvmgpu-guest {__version__} (protocol {PROTOCOL_VERSION})")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def channel_flags(sp):
        sp.add_argument("--socket",
                        help="loopback: the worker's unix socket (else KVMGPU_SOCKET, else the VM's devices)")
        sp.add_argument("--shm", help="loopback: the shared region file (else KVMGPU_SHM)")

    run = sub.add_parser("run", help="run a program with `cuda` resolving to the vGPU",
                         description="Run PROG with `from cuda.bindings import driver` (and `from cuda import cuda`) "
                                     "forwarded to the vGPU. Exits with PROG's status.")
    channel_flags(run)
    run.add_argument("program", nargs=argparse.REMAINDER, help="-- PROG ARGS...")
    run.set_defaults(func=run_command)

    info = sub.add_parser("info", help="the vGPU as this guest sees it (like nvidia-smi)")
    channel_flags(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=info_command)

    agent = sub.add_parser("agent", help="share the VM's vGPU channel among processes (systemd runs it)")
    agent.add_argument("--port", help="the virtio-serial port (default: found by name org.kvmgpu.0)")
    agent.add_argument("--region", help="the region to map (default: BAR2 of the ivshmem device)")
    agent.add_argument("--listen", default="/run/kvmgpu-guest/agent.sock", help="the socket processes connect to")
    agent.set_defaults(func=agent_command)

    reg = sub.add_parser("register", help="make this package's libcuda.so.1 and libnvidia-ml.so.1 the system's "
                                          "(ld.so.conf.d + ldconfig; as root)")
    reg.add_argument("--conf", help=argparse.SUPPRESS)
    reg.set_defaults(func=register_command)
    unreg = sub.add_parser("unregister", help="undo register")
    unreg.add_argument("--conf", help=argparse.SUPPRESS)
    unreg.set_defaults(func=unregister_command)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except CliError as e:
        print(f"kvmgpu-guest: {e.what}" + (f" ({e.hint})" if e.hint else ""), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
