"""The guest's NVML (libnvidia-ml.so.1 from guest-agent/libnvml) on the cuda backend, against the
host's real NVML: nvidia-ml-py in a guest process (tests/guest/programs/nvml_report.py, the guest's
library first on LD_LIBRARY_PATH, the GPU hidden from it) names the same GPU (name, UUID, PCI bus
id, CUDA driver version), reports the VM's quota as the total, the VM's allocations as used and
its process, and the VM's utilisation while a guest keeps the GPU busy."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ROOT / "tests" / "guest" / "programs"
GiB, MiB = 1 << 30, 1 << 20


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("libcuda_build", ROOT / "guest-agent" / "libcuda" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    if build.compiler() is None:
        pytest.skip("no C compiler to build libnvidia-ml.so.1")
    out = tmp_path_factory.mktemp("guestlibs")
    build.build(out)
    build.build_nvml(out)
    return out


@pytest.fixture(scope="module")
def host():
    """GPU 0 as the host's real NVML sees it (the worker's GPU)."""
    nv = pytest.importorskip("pynvml")
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    text = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
    seen = {"name": text(nv.nvmlDeviceGetName(h)), "uuid": text(nv.nvmlDeviceGetUUID(h)),
            "pci_bus_id": text(nv.nvmlDeviceGetPciInfo(h).busId),
            "cuda_driver": nv.nvmlSystemGetCudaDriverVersion()}
    yield seen, nv, h
    nv.nvmlShutdown()


def guest_env(vm, libs) -> dict:
    return {**vm.env, "LD_LIBRARY_PATH": str(libs), "CUDA_VISIBLE_DEVICES": ""}


def report(vm, libs) -> dict:
    proc = subprocess.run([sys.executable, str(PROGRAMS / "nvml_report.py")], capture_output=True, text=True,
                          env=guest_env(vm, libs), timeout=120)
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\n--- worker ---\n{vm.logtext()}"
    out = json.loads(proc.stdout)
    assert out["count"] == 1
    return out


def test_the_guest_names_the_hosts_gpu_and_its_quota(vms, libs, host, record):
    seen, nv, h = host
    vm = vms("nvml", gmem="4G")
    out = report(vm, libs)
    dev = out["devices"][0]
    record("nvml_identity", {"guest": {k: dev[k] for k in ("name", "uuid", "pci_bus_id")}, "host": seen})
    assert (dev["name"], dev["uuid"], dev["pci_bus_id"]) == (seen["name"], seen["uuid"], seen["pci_bus_id"])
    assert out["cuda_driver"] == seen["cuda_driver"]
    assert dev["memory"]["total"] == 4 * GiB  # the quota, not the GPU's
    assert dev["memory"]["used"] == 0 and dev["processes"] == []
    assert dev["temperature"].startswith("NVMLError 3:")  # the host's, NOT_SUPPORTED in the guest


def test_memory_processes_and_utilisation_follow_the_vm(vms, libs, host, record):
    seen, nv, h = host
    vm = vms("nvmluse", gmem="4G")
    holder = subprocess.Popen([sys.executable, str(PROGRAMS / "memory_holder.py")], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=guest_env(vm, libs))
    try:
        pid = int(holder.stdout.readline().split()[1])
        holder.stdin.write(f"alloc {256 * MiB}\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "done"
        dev = report(vm, libs)["devices"][0]
        assert dev["memory"]["used"] >= 256 * MiB
        assert [p["pid"] for p in dev["processes"]] == [pid] and dev["processes"][0]["memory"] >= 256 * MiB
        # what the host's NVML says of the worker (a container's pid namespace may hide it): a record
        on_host = {p.pid: p.usedGpuMemory for p in nv.nvmlDeviceGetComputeRunningProcesses(h)}
        record("nvml_memory", {"guest_used": dev["memory"]["used"], "guest_processes": dev["processes"],
                               "host_worker": on_host.get(vm.proc.pid)})
    finally:
        holder.stdin.close()
        holder.wait(60)
    idle = report(vm, libs)["devices"][0]["utilization"]["gpu"]
    spinner = vm.guest("spin", str(1_000_000), "5", str(time.monotonic() + 1.0))  # 1 ms kernels for 5 s
    time.sleep(3.5)
    busy = report(vm, libs)["devices"][0]["utilization"]["gpu"]
    spinner.communicate(timeout=60)
    record("nvml_utilisation", {"idle": idle, "busy": busy})
    assert idle <= 10 and busy >= 50, (idle, busy)
