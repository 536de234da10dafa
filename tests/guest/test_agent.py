"""The guest agent on the host: its channel end is a connection to a real loopback
`kvmgpu worker --backend sim` (which behaves as QEMU's socket does), its region the worker's file.
Several processes at once through it (each its own session and window, one quota), GOODBYE when a
process exits, and processes told when the host end goes away instead of waiting forever."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from kvmgpu_guest.agent import Agent

from loopback import LoopbackWorker

PROGRAM = r"""
import os, sys, time
from cuda.bindings import driver as cuda
assert cuda.cuInit(0)[0] == 0
err, dev = cuda.cuDeviceGet(0)
err, ctx = cuda.cuCtxCreate(0, dev)
assert err == 0, err
err, ptr = cuda.cuMemAlloc(1 << 20)
assert err == 0, err
data = os.urandom(1 << 20)
assert cuda.cuMemcpyHtoD(ptr, data, len(data))[0] == 0
back = bytearray(len(data))
assert cuda.cuMemcpyDtoH(back, ptr, len(back))[0] == 0 and back == data
open(sys.argv[1], "w").close()
while not os.path.exists(sys.argv[2]):    # hold the session until all are in
    time.sleep(0.02)
_, free, total = cuda.cuMemGetInfo()
for _ in range(3):
    assert cuda.cuCtxSynchronize()[0] == 0
print("OK", (total - free) >> 20, flush=True)
"""


@pytest.fixture
def agent(tmp_path):
    w = LoopbackWorker(gmem="64M", region="16M")
    chan = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    chan.connect(w.socket)
    region_fd = os.open(w.shm, os.O_RDWR)
    path = str(tmp_path / "agent.sock")
    a = Agent(chan.fileno(), region_fd, os.fstat(region_fd).st_size, path)
    t = threading.Thread(target=a.serve_forever, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        assert time.monotonic() < deadline and t.is_alive(), "the agent did not listen"
        time.sleep(0.02)
    a.worker, a.path, a.thread = w, path, t
    yield a
    a.running = False
    t.join(5)
    chan.close()
    os.close(region_fd)
    w.stop()


def run_cli(agent_path, *argv, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("KVMGPU_SOCKET", "KVMGPU_SHM")}
    env["KVMGPU_AGENT_SOCKET"] = agent_path
    return subprocess.Popen([sys.executable, "-c", "import sys; from kvmgpu_guest.cli import main; sys.exit(main())",
                             "run", "--", sys.executable, *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_several_processes_at_once_share_the_vm_quota(agent, tmp_path):
    n = 6                                       # more than a quarter of the region each would allow
    prog = tmp_path / "p.py"
    prog.write_text(PROGRAM)
    check = tmp_path / "check.py"
    check.write_text("from cuda.bindings import driver as cuda\ncuda.cuInit(0)\n_, dev = cuda.cuDeviceGet(0)\n"
                     "cuda.cuCtxCreate(0, dev)\n"
                     "_, free, total = cuda.cuMemGetInfo()\nprint(total - free)\n")
    go = tmp_path / "go"
    procs = [run_cli(agent.path, str(prog), str(tmp_path / f"in{i}"), str(go)) for i in range(n)]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"in{i}").exists() for i in range(n)):
            dead = [p for p in procs if p.poll() is not None]
            assert not dead and time.monotonic() < deadline, \
                [p.communicate() for p in dead] + [agent.worker.output()]
            time.sleep(0.05)
        out, err = run_cli(agent.path, str(check)).communicate(timeout=30)
        # every process's 1 MiB counts: the VM's quota, charged at its size on the GPU (2 MiB pages)
        assert out.strip() == str(n * (2 << 20)), (out, err)
        go.touch()
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, (out, err, agent.worker.output())
        ok, used_mib = out.split()
        assert ok == "OK" and int(used_mib) >= 1
    # each its own session, numbered by the agent on the channel, with a sixteenth of the region
    starts = re.findall(r"session \d+:(\d+) start \(client 'kvmgpu libcuda/[^']*', window \d+\+(\d+)\)",
                        agent.worker.output())
    assert sorted(int(number) for number, _ in starts)[:n] == list(range(1, n + 1))
    assert {size for _, size in starts} == {str((16 << 20) // 16)}
    # each process's exit was a GOODBYE: the worker released its memory and windows
    deadline = time.monotonic() + 10
    while True:
        out, err = run_cli(agent.path, str(check)).communicate(timeout=30)
        if out.strip() == "0":
            break
        assert time.monotonic() < deadline, (out, err, agent.worker.output())
        time.sleep(0.2)


def test_processes_are_told_when_the_host_goes_away(agent, tmp_path):
    prog = tmp_path / "p.py"
    prog.write_text(
        "import os, sys, time\nfrom cuda.bindings import driver as cuda\ncuda.cuInit(0)\n"
        "_, dev = cuda.cuDeviceGet(0)\n_, ctx = cuda.cuCtxCreate(0, dev)\n"
        "assert cuda.cuMemGetInfo()[0] == 0\nopen(sys.argv[1], 'w').close()\n"
        "while not os.path.exists(sys.argv[2]):\n    time.sleep(0.02)\n"
        "print('AFTER', cuda.cuGetErrorName(cuda.cuMemGetInfo()[0])[1].decode(), flush=True)\n")
    go = tmp_path / "go"
    p = run_cli(agent.path, str(prog), str(tmp_path / "in"), str(go))
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "in").exists():
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.05)
        agent.worker.proc.send_signal(signal.SIGKILL)     # the host end goes away
        agent.worker.proc.wait(10)
        deadline = time.monotonic() + 10
        while agent.clients:
            assert time.monotonic() < deadline, "the agent kept the process's session"
            time.sleep(0.05)
        go.touch()
        out, err = p.communicate(timeout=30)               # an error, not a hang
    finally:
        if p.poll() is None:
            p.kill()
    assert "AFTER CUDA_ERROR" in out, (out, err)
    assert agent.thread.is_alive()
