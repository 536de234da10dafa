"""Issue 4's proof, end to end in one VM: the real `kvmgpu attach` CLI on a TCG test guest, the real
`kvmgpu daemon` (temporary configuration, simulated GPU) starting the real worker when the VM
boots, and, in the guest, the guest agent and unmodified cuda-python programs run through
`kvmgpu-guest run`, several at once, and an nvcc-built CUDA C program (NVIDIA's runtime, linked
static) on the guest's libcuda.so.1 where the host has nvcc.

In the guest (one boot): `kvmgpu-guest info`; three processes at once (guest-agent/examples/
vector_demo.py: vector_add on random data + an allocation past the quota; tests/vm/programs/
quota_share.py holder + taker: one process's allocation counts against the other's, the quota is
the VM's); then guest-agent/examples/vgpu_bench.py (round trip and copy bandwidth; under TCG the
figures measure the emulator, not kvmgpu); nvidia-ml-py on the guest's libnvidia-ml.so.1 (the
vGPU as `kvmgpu-guest info` shows it). On the host: the daemon's API and metrics while the VM
runs, then after it powered off: worker gone, quota free, history row closed, `kvmgpu list`, and
the region /dev/shm/kvmgpu-<vm> removed by the daemon.

Needs qemu:///system (skipped with the reason when unreachable) and root (attach, the daemon).
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pynvml
import pytest

from guestvm import GuestVM, build_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "guest"))
from test_cudart import EVERY_CHECK  # noqa: E402  (the checks the program prints, as in loopback)

pytestmark = [pytest.mark.vm, pytest.mark.libvirt]

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
KVMGPU = Path(sys.executable).parent / "kvmgpu"
EXAMPLES = REPO / "guest-agent" / "examples"
GUEST_PROGRAMS = REPO / "tests" / "guest" / "programs"
PTX = REPO / "tests" / "kernels" / "kernels.ptx"
MIB = 1 << 20
GMEM = 256 * MIB
HOLD_MIB = 160           # the holder's allocation; twice that is past the 256 MiB quota

PAYLOAD = r"""
echo "=== kvmgpu-guest info"
kvmgpu-guest info
echo "INFO-EXIT $?"
mkdir -p /tmp/qs
echo "=== three processes at once"
kvmgpu-guest run -- python3 vector_demo.py kernels.ptx 16384 >/tmp/vector.log 2>&1 & p1=$!
kvmgpu-guest run -- python3 quota_share.py holder /tmp/qs {hold} >/tmp/holder.log 2>&1 & p2=$!
kvmgpu-guest run -- python3 quota_share.py taker /tmp/qs {hold} >/tmp/taker.log 2>&1 & p3=$!
wait $p1; e1=$?
wait $p2; e2=$?
wait $p3; e3=$?
cat /tmp/vector.log; echo "VECTOR-EXIT $e1"
cat /tmp/holder.log; echo "HOLDER-EXIT $e2"
cat /tmp/taker.log; echo "TAKER-EXIT $e3"
echo "=== a CUDA C program (nvcc, the runtime linked static) on the guest's libcuda.so.1"
if [ -x vector_add_runtime ]; then
  kvmgpu-guest run -- ./vector_add_runtime > /tmp/cuda_c.log 2>&1; e4=$?
  cat /tmp/cuda_c.log; echo "CUDA-C-EXIT $e4"
else
  echo "CUDA-C-SKIPPED (no nvcc on the host)"
fi
echo "=== vgpu_bench"
kvmgpu-guest run -- python3 vgpu_bench.py --seconds 0.5 --sizes 1M,8M
echo "BENCH-EXIT $?"
echo "=== NVML: nvidia-ml-py on the guest's libnvidia-ml.so.1"
kvmgpu-guest run -- python3 nvml_report.py > /tmp/nvml.json 2>/tmp/nvml.err; e5=$?
echo "NVML_JSON $(cat /tmp/nvml.json)"; cat /tmp/nvml.err; echo "NVML-EXIT $e5"
[ $e1 = 0 ] && [ $e2 = 0 ] && [ $e3 = 0 ]
""".format(hold=HOLD_MIB)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float, log=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out ({timeout:.0f} s) waiting for {what}\n{log()}")
        time.sleep(0.2)


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""   # a zombie's is empty
    except OSError:
        return False


@pytest.fixture
def kvmgpu_env():
    """A temporary kvmgpu configuration: channel_dir, state_dir, API socket, metrics port, 1 sim GPU."""
    # under /tmp with open parents: QEMU (libvirt-qemu) binds the channel socket in base/ch
    base = Path(tempfile.mkdtemp(prefix="kvmgpu-vgpuvm-", dir="/tmp"))
    os.chmod(base, 0o755)
    cfg = base / "kvmgpu.toml"
    cfg.write_text(f'sim_gpus = "1x16G"\nchannel_dir = "{base}/ch"\nregion_size = "64M"\n'
                   f'state_dir = "{base}/state"\napi_socket = "{base}/api.sock"\n'
                   f'metrics_port = {free_port()}\n')
    env = {**os.environ, "KVMGPU_SIM_GPUS": "1x16G", "KVMGPU_CONFIG": str(cfg)}
    env.pop("LIBVIRT_DEFAULT_URI", None)
    yield base, env
    shutil.rmtree(base, ignore_errors=True)


class Daemon:
    def __init__(self, base: Path, env: dict):
        self.base, self.env = base, env
        self.log = base / "daemon.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(KVMGPU), "daemon", "--connect", "qemu:///system",
                 "--run-dir", str(self.base / "run"), "--verbose"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env)
        wait_for(self._up, "the daemon's API", 30, self.logs)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited with {self.proc.returncode}:\n{self.logs()}")
        try:
            return self.query({"op": "status"})["daemon"]["pid"] == self.proc.pid
        except Exception:  # noqa: BLE001 (not up yet)
            return False

    def query(self, request: dict) -> dict:
        from kvmgpu.config import load_config
        from kvmgpu.daemon import api
        return api.query(load_config(self.env["KVMGPU_CONFIG"]), request)

    def metrics(self) -> str:
        address = self.query({"op": "status"})["daemon"]["metrics"]
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
            return r.read().decode()

    def logs(self) -> str:
        try:
            text = self.log.read_text(errors="replace")[-6000:]
        except OSError:
            text = ""
        worker_logs = "".join(f"\n--- {p}\n{p.read_text(errors='replace')[-3000:]}"
                              for p in sorted((self.base / "state" / "logs").glob("*.log")))
        return f"--- daemon log\n{text}{worker_logs}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def uid_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def owner(path: Path) -> str:
    try:
        st = os.stat(path)
    except OSError as e:
        return f"({e.strerror})"
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group} {stat.filemode(st.st_mode)}"


def kvmgpu_cli(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(KVMGPU), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def lines(console: str, prefix: str) -> list[str]:
    return [ln for ln in console.splitlines() if ln.startswith(prefix)]


def test_vgpu_vm_end_to_end(guest_vm: GuestVM, kvmgpu_env, capsys):
    from kvmgpu.daemon.workers import find_worker_pids, qemu_identity
    from kvmgpu.vgpu import region_path

    base, env = kvmgpu_env
    name = guest_vm.name
    region = Path(region_path(name))
    daemon = Daemon(base, env)
    t0 = time.monotonic()
    try:
        # 1. the test guest, defined (not started) with the agent on and the payload; the REAL attach
        guest_vm.cmdline = "kvmgpu.agent=1"
        files = {"vector_demo.py": EXAMPLES / "vector_demo.py", "vgpu_bench.py": EXAMPLES / "vgpu_bench.py",
                 "quota_share.py": HERE / "programs" / "quota_share.py", "kernels.ptx": PTX,
                 # nvidia-ml-py (one module, the host's dependency too) and what it reports
                 "pynvml.py": Path(pynvml.__file__), "nvml_report.py": GUEST_PROGRAMS / "nvml_report.py"}
        cuda_c = build_image.cuda_program()  # None where there is no nvcc
        if cuda_c is not None:
            files["vector_add_runtime"] = cuda_c
        guest_vm.define(PAYLOAD, files=files)
        r = kvmgpu_cli(env, "attach", name, "--gmem", "256M", "--compute", "50", "--json")
        assert r.returncode == 0, f"attach failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        attached = json.loads(r.stdout)
        assert attached["changed"] is True, attached
        ch = base / "ch"
        st = ch.stat()
        assert oct(st.st_mode & 0o7777) == "0o2770", oct(st.st_mode)

        # 2. the daemon, then the VM
        daemon.start()
        guest_vm.start()
        t_boot = time.monotonic()
        seen: dict = {}
        while guest_vm.is_running():
            if time.monotonic() - t_boot > 150:
                raise AssertionError(f"{name} still running after 150 s; console:\n"
                                     f"{guest_vm.console()[-5000:]}\n{daemon.logs()}")
            try:
                v = next((v for v in daemon.query({"op": "status"})["vgpus"] if v["vm"] == name), None)
            except Exception:  # noqa: BLE001
                v = None
            if v is not None:
                if v.get("worker_pid"):
                    seen.setdefault("first", v)
                    seen["last"] = v
                    seen["max_used"] = max(seen.get("max_used", 0), v["used"])
                    if "metrics" not in seen:
                        seen["metrics"] = daemon.metrics()
                        seen["worker_uid"] = uid_of(v["worker_pid"])
                        seen["files"] = {"region": owner(region), "socket": owner(ch / f"{name}.sock")}
            time.sleep(0.3)
        res = guest_vm.wait(timeout=5)
        console = res.console
        t_off = time.monotonic()

        with capsys.disabled():
            print(f"\n[vgpu-vm] guest console (boot {res.boot_s}s guest uptime, VM wall {res.wall_s:.1f}s):")
            start = console.find("=== kvmgpu-guest info")
            print(console[start if start >= 0 else 0:].rstrip())

        # 3. what the guest saw
        diag = f"console:\n{console[-6000:]}\n{daemon.logs()}"
        assert res.exit_code == 0, diag
        assert "INFO-EXIT 0" in console, diag
        info = dict(re.findall(r"^(memory|compute share|VM|backend)\s{2,}(.*)$", console, re.M))
        assert re.match(r"0 MiB / 256 MiB used", info.get("memory", "")), diag
        assert info.get("compute share") == "50% (share)", diag
        assert info.get("VM") == name, diag
        # vector_demo: the vector result checked in the guest, and the over-quota allocation refused
        assert "VECTOR-EXIT 0" in console, diag
        assert re.search(r"vector_demo\[\d+\]: vector_add of 16384 random floats: result checked OK", console), diag
        assert re.search(r"vector_demo\[\d+\]: allocation of \d+ MiB past the 256 MiB quota: "
                         r"CUDA_ERROR_OUT_OF_MEMORY", console), diag
        assert re.search(r"vector_demo\[\d+\]: PASS", console), diag
        # two more processes at the same time: the quota is the VM's whichever process allocates
        shares = {ln.split()[1]: json.loads(ln.split(" ", 2)[2]) for ln in lines(console, "QUOTA_SHARE ")}
        assert "HOLDER-EXIT 0" in console and "TAKER-EXIT 0" in console, diag
        holder, taker = shares["holder"], shares["taker"]
        assert holder["alloc"] == "CUDA_SUCCESS" and holder["ok"], diag
        assert taker["used_by_others_mib"] >= HOLD_MIB, diag
        assert taker["same_alloc"] == "CUDA_ERROR_OUT_OF_MEMORY", diag
        assert taker["rest_alloc"] == "CUDA_SUCCESS" and taker["ok"], diag
        pids = {holder["pid"], taker["pid"]}
        assert len(pids) == 2, diag
        # the nvcc-built CUDA C program: NVIDIA's runtime (static) on the guest's libcuda.so.1, every check OK
        if cuda_c is not None:
            assert "CUDA-C-EXIT 0" in console, diag
            for check in EVERY_CHECK:
                assert f"OK {check}" in console, f"{check!r} not OK in the guest\n{diag}"
        else:
            assert "CUDA-C-SKIPPED" in console, diag
        # NVML in the guest (what torch.cuda's device count, Ray and nvitop-style monitors ask):
        # the vGPU as `kvmgpu-guest info` shows it, its memory the quota
        assert "NVML-EXIT 0" in console, diag
        nvml = json.loads(lines(console, "NVML_JSON ")[-1].split(" ", 1)[1])
        assert nvml["count"] == 1, diag
        device = nvml["devices"][0]
        vgpu = re.search(r"^vGPU\s{2,}(.*?)\s{2,}(GPU-[0-9a-f-]+)$", console, re.M)
        assert vgpu and (device["name"], device["uuid"]) == (vgpu.group(1), vgpu.group(2)), diag
        assert device["memory"]["total"] == 256 * MIB, diag
        # the bench
        assert "BENCH-EXIT 0" in console, diag
        bench = json.loads(lines(console, "VGPU_BENCH_JSON ")[-1].split(" ", 1)[1])

        # 3. the host: the daemon saw the worker while the VM ran ...
        assert "first" in seen, f"the daemon's API never showed a worker for {name}\n{daemon.logs()}"
        worker_pid = seen["first"]["worker_pid"]
        assert seen["last"]["worker_pid"] == worker_pid, seen      # one worker all along
        assert seen["first"]["gmem"] == GMEM and seen["first"]["compute"] == 50, seen
        assert seen["first"]["backend"] == "sim" and seen["first"]["state"] == "running", seen
        assert seen["last"]["calls"] > 0, seen
        assert f'kvmgpu_vgpu_worker_up{{vm="{name}",gpu="0"}} 1' in seen["metrics"], seen["metrics"]
        assert f'kvmgpu_vgpu_memory_limit_bytes{{vm="{name}",gpu="0"}} {GMEM}' in seen["metrics"], seen["metrics"]
        # the worker runs as QEMU's user and could open what QEMU created (channel socket, region)
        qemu_uid = pwd.getpwnam(qemu_identity()[0]).pw_uid
        if "workers run as root" in daemon.logs():
            assert seen["worker_uid"] == 0, seen       # the daemon said why (kvmgpu's code unreadable)
        else:
            assert seen["worker_uid"] == qemu_uid, (seen, daemon.logs())
        # ... and after it powered off: the worker ended, the quota is free, the region is gone
        wait_for(lambda: not pid_alive(worker_pid) and not find_worker_pids(name),
                 f"worker {worker_pid} to end", 20, daemon.logs)
        t_worker_gone = time.monotonic()
        status = wait_for(lambda: (lambda s: s if not any(v["vm"] == name for v in s["vgpus"]) else None)(
            daemon.query({"op": "status"})), "the daemon to release the vGPU", 15, daemon.logs)
        assert status["gpus"][0]["promised"] == 0 and status["gpus"][0]["used"] == 0, status
        runs = wait_for(lambda: [r for r in daemon.query({"op": "history", "vm": name})["runs"]
                                 if r["ended"] is not None], "the history row to close", 15, daemon.logs)
        assert len(runs) == 1 and runs[0]["worker_pid"] == worker_pid, runs
        assert runs[0]["exit_status"] == 0, runs        # it ended by itself when QEMU closed the socket
        assert runs[0]["peak_memory"] >= HOLD_MIB * MIB and runs[0]["calls"] > 0, runs
        wait_for(lambda: not os.path.lexists(region), f"the daemon to remove {region}", 10, daemon.logs)
        r = kvmgpu_cli(env, "list", "--json")
        assert r.returncode == 0, r.stderr
        listed = {i["vm"]: i for i in json.loads(r.stdout)}
        assert listed[name]["gmem"] == GMEM and listed[name]["state"] == "shut off", listed[name]
        assert listed[name]["daemon"] is True and listed[name]["used"] is None, listed[name]
        r = kvmgpu_cli(env, "gpus", "--json")
        assert r.returncode == 0, r.stderr
        gpus = json.loads(r.stdout)
        assert gpus[0]["vgpus"] >= 1 and gpus[0]["promised"] >= GMEM, gpus  # for its next boot

        # 4. the figures (TCG: the emulator's speed, not kvmgpu's)
        with capsys.disabled():
            sc = bench["sync_call_us"]
            print(f"[vgpu-vm] in-VM (TCG, not representative) sync call round trip: median {sc['median']:.0f} µs, "
                  f"best {sc['best']:.0f} µs")
            for c in bench["copy"]:
                print(f"[vgpu-vm]   {c['bytes'] // MIB} MiB: HtoD {c['htod_mib_s']:.1f} MiB/s, "
                      f"DtoH {c['dtoh_mib_s']:.1f} MiB/s (median)")
            print(f"[vgpu-vm] worker uid {seen['worker_uid']}, files while running: {seen['files']}")
            print(f"[vgpu-vm] worker pid {worker_pid}, max used seen by the API {seen['max_used'] // MIB} MiB, "
                  f"history peak {runs[0]['peak_memory'] // MIB} MiB; worker gone {t_worker_gone - t_off:.1f} s "
                  f"after power-off; test wall {time.monotonic() - t0:.1f} s")
    finally:
        daemon.stop()
        guest_vm.cleanup()
        for pid in find_worker_pids(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            region.unlink()
        except FileNotFoundError:
            pass
