"""What nvidia-ml-py (pynvml) says about the GPUs it finds, as one JSON object: the calls that
torch.cuda, Ray's GPU detection and nvitop-style monitors make. The library is whatever
`libnvidia-ml.so.1` the dynamic loader finds (LD_LIBRARY_PATH).

    python nvml_report.py        # prints JSON; errors of single queries are their NVML names
"""

import json

import pynvml as nv


def ask(fn, *args):
    try:
        return fn(*args)
    except nv.NVMLError as e:
        return f"NVMLError {e.value}: {e}"


def main():
    nv.nvmlInit()
    report = {"count": nv.nvmlDeviceGetCount(), "driver": nv.nvmlSystemGetDriverVersion(),
              "cuda_driver": nv.nvmlSystemGetCudaDriverVersion(), "devices": []}
    for i in range(report["count"]):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        mem = nv.nvmlDeviceGetMemoryInfo(h)
        mem2 = nv.nvmlDeviceGetMemoryInfo(h, nv.nvmlMemory_v2)
        util = nv.nvmlDeviceGetUtilizationRates(h)
        pci = nv.nvmlDeviceGetPciInfo(h)
        uuid = nv.nvmlDeviceGetUUID(h)
        report["devices"].append({
            "index": nv.nvmlDeviceGetIndex(h),
            "name": nv.nvmlDeviceGetName(h),
            "uuid": uuid,
            "by_uuid": nv.nvmlDeviceGetIndex(nv.nvmlDeviceGetHandleByUUID(uuid)),
            "by_pci": nv.nvmlDeviceGetIndex(nv.nvmlDeviceGetHandleByPciBusId(pci.busId)),
            "memory": {"total": mem.total, "used": mem.used, "free": mem.free},
            "memory_v2": {"total": mem2.total, "used": mem2.used, "free": mem2.free},
            "utilization": {"gpu": util.gpu, "memory": util.memory},
            "pci_bus_id": pci.busId.decode() if isinstance(pci.busId, bytes) else pci.busId,
            "compute_capability": list(nv.nvmlDeviceGetCudaComputeCapability(h)),
            "architecture": ask(nv.nvmlDeviceGetArchitecture, h),
            "brand": ask(nv.nvmlDeviceGetBrand, h),
            "minor": ask(nv.nvmlDeviceGetMinorNumber, h),
            "processes": [{"pid": p.pid, "memory": p.usedGpuMemory}
                          for p in nv.nvmlDeviceGetComputeRunningProcesses(h)],
            "processes_v2": [{"pid": p.pid, "memory": p.usedGpuMemory}
                             for p in nv.nvmlDeviceGetComputeRunningProcesses_v2(h)],
            "graphics_processes": len(nv.nvmlDeviceGetGraphicsRunningProcesses(h)),
            "temperature": ask(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
            "power": ask(nv.nvmlDeviceGetPowerUsage, h),
            "clock": ask(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
            "fan": ask(nv.nvmlDeviceGetFanSpeed, h),
            "mig": ask(nv.nvmlDeviceGetMigMode, h),
            "not_a_function": ask(nv.nvmlDeviceGetSupportedMemoryClocks, h),
        })
    nv.nvmlShutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
