"""The guest's NVML (guest-agent/libnvml, libnvidia-ml.so.1) on a real `kvmgpu worker --backend
sim` in loopback: nvidia-ml-py finds it through the dynamic loader, as it finds NVIDIA's, and sees
the vGPU as `kvmgpu-guest info` does; another process's allocations through libcuda.so.1 show in
its memory and process list; what a VM is not given is NVML_ERROR_NOT_SUPPORTED; bad arguments get
NVML's errors (a C program, also built with AddressSanitizer and UBSan)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from loopback import PROGRAMS, ROOT

_spec = importlib.util.spec_from_file_location("libcuda_build", ROOT / "guest-agent" / "libcuda" / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

NOT_SUPPORTED, FUNCTION_NOT_FOUND, DRIVER_NOT_LOADED = 3, 13, 9
MiB = 1 << 20
SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    if build.compiler() is None:
        pytest.skip("no C compiler (gcc) to build libnvidia-ml.so.1")
    out = tmp_path_factory.mktemp("libs")
    build.build(out)
    build.build_nvml(out)
    return out


def guest_env(worker, libs, **extra) -> dict:
    env = {**worker.env, "LD_LIBRARY_PATH": str(libs)}
    env.pop("KVMGPU_WINDOW", None)
    return {**env, **extra}


def nvml_report(worker, libs) -> dict:
    proc = subprocess.run([sys.executable, str(PROGRAMS / "nvml_report.py")], capture_output=True, text=True,
                          env=guest_env(worker, libs), timeout=60)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n--- worker ---\n{worker.output()}"
    return json.loads(proc.stdout)


def guest_info(worker) -> dict:
    proc = subprocess.run([sys.executable, "-c", "from kvmgpu_guest.cli import main; main()", "info", "--json",
                           "--socket", worker.socket, "--shm", worker.shm], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


class Holder:
    """A guest process holding device memory through libcuda.so.1 (programs/memory_holder.py)."""

    def __init__(self, worker, libs):
        # in loopback its session takes all the region: the monitors (NVML, info) need none of it
        self.proc = subprocess.Popen([sys.executable, str(PROGRAMS / "memory_holder.py")], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=guest_env(worker, libs))
        line = self.proc.stdout.readline().split()
        assert line[:1] == ["ready"], f"{line}\n{worker.output()}"
        self.pid = int(line[1])

    def say(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "done"

    def quit(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(30)


@pytest.fixture
def holder(worker, libs):
    h = Holder(worker, libs)
    yield h
    h.quit()


def test_the_library_exports_nvml_only(libs):
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(libs / "libnvidia-ml.so.1")],
                             capture_output=True, text=True, check=True).stdout.split("\n")
    names = [line.split()[-1] for line in symbols if line.strip()]
    assert names and all(n.startswith("nvml") for n in names), names
    for needed in ("nvmlInit_v2", "nvmlInitWithFlags", "nvmlDeviceGetCount_v2", "nvmlDeviceGetHandleByIndex_v2",
                   "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetComputeRunningProcesses_v3",
                   "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetPciInfo_v3", "nvmlErrorString"):
        assert needed in names
    # PyTorch's c10 DriverAPI asserts these exist once it has loaded libnvidia-ml.so.1
    for torch_needs in ("nvmlInit_v2", "nvmlDeviceGetHandleByPciBusId_v2", "nvmlDeviceGetNvLinkRemoteDeviceType",
                        "nvmlDeviceGetNvLinkRemotePciInfo_v2", "nvmlDeviceGetComputeRunningProcesses",
                        "nvmlSystemGetCudaDriverVersion_v2"):
        assert torch_needs in names
    assert os.readlink(libs / "libnvidia-ml.so") == "libnvidia-ml.so.1"


def test_nvidia_ml_py_sees_the_vgpu_as_kvmgpu_guest_info_does(worker, libs):
    report, info = nvml_report(worker, libs), guest_info(worker)
    assert report["count"] == 1
    dev = report["devices"][0]
    assert (dev["name"], dev["uuid"]) == (info["name"], info["uuid"])
    assert dev["index"] == dev["by_uuid"] == dev["by_pci"] == 0
    assert dev["memory"]["total"] == info["memory_total"] == 64 * MiB  # the quota, not the GPU
    assert dev["memory"]["used"] == info["memory_used"] == 0
    assert dev["memory_v2"] == dev["memory"]
    assert dev["compute_capability"] == info["compute_capability"]
    assert report["cuda_driver"] == 13000 and report["driver"] == info["driver_version"] == "13.0"
    assert 0 <= dev["utilization"]["gpu"] <= 100 and dev["utilization"]["memory"] == 0
    assert dev["utilization"]["gpu"] == info["utilization_gpu"] == 0  # the sim backend has no compute gate
    assert dev["processes"] == info["processes"] == []  # NVML's own session and info's are monitors
    assert dev["architecture"] == 9 and dev["brand"] == 14  # Hopper (9.0), NVML_BRAND_NVIDIA
    assert dev["graphics_processes"] == 0


def test_another_process_allocation_shows_in_memory_and_processes(worker, libs, holder):
    holder.say(f"alloc {8 * MiB}")
    dev, info = nvml_report(worker, libs)["devices"][0], guest_info(worker)
    assert dev["memory"]["used"] == info["memory_used"] == 8 * MiB
    assert dev["memory"]["free"] == 56 * MiB
    assert dev["processes"] == dev["processes_v2"] == [{"pid": holder.pid, "memory": 8 * MiB}]
    assert info["processes"] == [{"pid": holder.pid, "sessions": 1, "memory_used": 8 * MiB}]

    holder.say("free")
    dev = nvml_report(worker, libs)["devices"][0]
    assert dev["memory"]["used"] == 0
    assert dev["processes"] == [{"pid": holder.pid, "memory": 0}]  # its session lives on, holding nothing

    holder.quit()
    assert nvml_report(worker, libs)["devices"][0]["processes"] == []


def test_what_a_vm_is_not_given_is_not_supported(worker, libs):
    dev = nvml_report(worker, libs)["devices"][0]
    for query in ("temperature", "power", "clock", "fan", "mig"):
        assert dev[query].startswith(f"NVMLError {NOT_SUPPORTED}:"), (query, dev[query])
    # a function the library does not have: nvidia-ml-py's FUNCTION_NOT_FOUND, as with an old driver
    assert dev["not_a_function"].startswith(f"NVMLError {FUNCTION_NOT_FOUND}:")


def test_no_vgpu_is_driver_not_loaded_with_the_reason(libs, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVMGPU_")}
    env.update(LD_LIBRARY_PATH=str(libs), KVMGPU_AGENT_SOCKET=str(tmp_path / "none.sock"))
    code = ("import pynvml as nv\n"
            "try:\n    nv.nvmlInit()\nexcept nv.NVMLError as e:\n    print('init', e.value)\n"
            "nv.nvmlInitWithFlags(nv.NVML_INIT_FLAG_NO_GPUS)\nprint('count', nv.nvmlDeviceGetCount())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.split("\n")[:2] == [f"init {DRIVER_NOT_LOADED}", "count 0"], proc.stdout + proc.stderr
    assert "no vGPU found" in proc.stderr, proc.stderr


def _checks_program(libs, out, extra=()):
    lib_dir = out.parent
    prog = out
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", *extra, str(PROGRAMS / "nvml_checks.c"),
                    "-L", str(lib_dir), "-lnvidia-ml", f"-Wl,-rpath,{lib_dir}", "-o", str(prog)], check=True)
    return prog


def _run_checks(prog, worker, libs, holder, env=None):
    proc = subprocess.run([str(prog), str(holder.pid)], capture_output=True, text=True, timeout=60,
                          env={**guest_env(worker, libs), **(env or {})})
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("DONE"), \
        f"{proc.stdout}\n{proc.stderr}\n--- worker ---\n{worker.output()}"
    return proc.stdout


def test_bad_arguments_get_nvml_errors(worker, libs, holder, tmp_path):
    holder.say(f"alloc {4 * MiB}")
    prog = _checks_program(libs, libs / "nvml_checks")
    out = _run_checks(prog, worker, libs, holder)
    for what in ("name, 4 bytes", "handle index 1", "memory v2, a wrong version", "processes, no room",
                 "processes name the holder", "temperature", "shut down"):
        assert f"OK {what}" in out, out


def _runtime(name: str) -> str | None:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def test_the_library_under_asan_and_ubsan(worker, holder, tmp_path):
    if shutil.which("gcc") is None or not (_runtime("libasan.so") and _runtime("libubsan.so")):
        pytest.skip("needs gcc with libasan and libubsan (Debian: gcc)")
    libs = tmp_path / "sanitized"
    build.build(libs, SANITIZE)
    build.build_nvml(libs, SANITIZE)
    holder.say(f"alloc {2 * MiB}")
    prog = _checks_program(libs, libs / "nvml_checks", SANITIZE)
    _run_checks(prog, worker, libs, holder, env={"ASAN_OPTIONS": "abort_on_error=1",
                                                  "UBSAN_OPTIONS": "print_stacktrace=1"})


from test_libcuda import _wait_listening  # noqa: E402


def test_through_the_guest_agent_as_in_a_vm(agent, libs):
    """No loopback variables: the agent's socket, which renumbers sessions on the channel; the
    process list still names the guest's pids (the HELLO's), and NVML's session needs no window."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVMGPU_")}
    env.update(KVMGPU_AGENT_SOCKET=agent.path, LD_LIBRARY_PATH=str(libs))
    _wait_listening(agent.path)
    holder = subprocess.Popen([sys.executable, str(PROGRAMS / "memory_holder.py")], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        pid = int(holder.stdout.readline().split()[1])
        holder.stdin.write(f"alloc {4 * MiB}\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "done"
        proc = subprocess.run([sys.executable, str(PROGRAMS / "nvml_report.py")], capture_output=True,
                              text=True, env=env, timeout=60)
        assert proc.returncode == 0, f"{proc.stderr}\n--- worker ---\n{agent.worker.output()}"
        dev = json.loads(proc.stdout)["devices"][0]
        assert dev["memory"]["used"] == 4 * MiB
        assert dev["processes"] == [{"pid": pid, "memory": 4 * MiB}]
    finally:
        holder.stdin.close()
        holder.wait(30)


def test_kvmgpu_guest_run_puts_the_library_on_the_path(worker):
    from kvmgpu_guest import cli
    if not os.path.exists(os.path.join(cli.LIB_DIR, "libnvidia-ml.so.1")):
        pytest.skip(f"kvmgpu-guest was installed without libnvidia-ml.so.1 ({cli.LIB_DIR}; `make venv` builds it)")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "KVMGPU_SOCKET", "KVMGPU_SHM")}
    proc = subprocess.run([sys.executable, "-c", "from kvmgpu_guest.cli import main; main()", "run",
                           "--socket", worker.socket, "--shm", worker.shm, "--", sys.executable,
                           str(PROGRAMS / "nvml_report.py")], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["devices"][0]["memory"]["total"] == 64 * MiB
