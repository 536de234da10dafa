/* The guest's NVML: what only the worker knows, asked at each call through the monitor session
 * (nvml.c opens it): memory (the quota, what the VM holds), this VM's utilisation, its processes. */
#include <stddef.h>

#include "nvml_state.h"

#define NOT_MIG 0xFFFFFFFFu

/* The quota (total) and what the VM's processes hold of it (used). */
static nvmlReturn_t memory(nvmlDevice_t device, unsigned long long *total, unsigned long long *free_,
                           unsigned long long *used)
{
    struct kvmgpu_results_mem_get_info info;
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    if (rc)
        return rc;
    rc = kvmgpu_nvml_from_cuda(kvmgpu_mem_get_info(&kvmgpu_nvml_session, &info));
    if (rc)
        return rc;
    *total = info.total;
    *free_ = info.free;
    *used = info.total - info.free;
    return NVML_SUCCESS;
}

NVMLAPI nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *mem)
{
    if (!mem)
        return kvmgpu_nvml_check(device) ? kvmgpu_nvml_check(device) : NVML_ERROR_INVALID_ARGUMENT;
    return memory(device, &mem->total, &mem->free, &mem->used);
}

NVMLAPI nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *mem)
{
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    if (rc)
        return rc;
    if (!mem)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (mem->version != nvmlMemory_v2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    mem->reserved = 0; /* the context's own memory is the host's, outside the quota */
    return memory(device, &mem->total, &mem->free, &mem->used);
}

/* This VM's GPU time over the last second or more; memory: 0 (not measured). */
NVMLAPI nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization)
{
    struct kvmgpu_results_vgpu_utilization out;
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    if (rc)
        return rc;
    if (!utilization)
        return NVML_ERROR_INVALID_ARGUMENT;
    rc = kvmgpu_nvml_from_cuda(kvmgpu_vgpu_utilization(&kvmgpu_nvml_session, &out));
    if (rc)
        return rc;
    utilization->gpu = out.gpu > 100 ? 100 : out.gpu;
    utilization->memory = out.memory > 100 ? 100 : out.memory;
    return NVML_SUCCESS;
}

/* The VM's processes (pid in the guest, the device memory their sessions hold), into `n`. */
static nvmlReturn_t processes(nvmlDevice_t device, struct kvmgpu_process *procs, unsigned *n)
{
    struct kvmgpu_results_vgpu_processes out;
    size_t size = sizeof(struct kvmgpu_process) * KVMGPU_MAX_PROCESSES;
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    if (rc)
        return rc;
    rc = kvmgpu_nvml_from_cuda(kvmgpu_vgpu_processes(&kvmgpu_nvml_session, &out, procs, &size));
    if (rc)
        return rc;
    *n = out.count;
    if (*n > size / sizeof *procs)
        *n = (unsigned)(size / sizeof *procs);
    return NVML_SUCCESS;
}

/* NVML's contract: a count too small (infos may then be NULL) gets the count needed and
 * INSUFFICIENT_SIZE; else the entries and their count. `wide`: the _v2/_v3 entries. */
static nvmlReturn_t running(nvmlDevice_t device, unsigned int *count, void *infos, int wide)
{
    struct kvmgpu_process procs[KVMGPU_MAX_PROCESSES];
    unsigned n;
    if (!count)
        return kvmgpu_nvml_check(device) ? kvmgpu_nvml_check(device) : NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t rc = processes(device, procs, &n);
    if (rc)
        return rc;
    if (*count < n || (n && !infos)) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned i = 0; i < n; i++) {
        if (wide) {
            nvmlProcessInfo_t *p = (nvmlProcessInfo_t *)infos + i;
            p->pid = procs[i].pid;
            p->usedGpuMemory = procs[i].memory;
            p->gpuInstanceId = p->computeInstanceId = NOT_MIG;
        } else {
            nvmlProcessInfo_v1_t *p = (nvmlProcessInfo_v1_t *)infos + i;
            p->pid = procs[i].pid;
            p->usedGpuMemory = procs[i].memory;
        }
    }
    *count = n;
    return NVML_SUCCESS;
}

NVMLAPI nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *count,
                                                             nvmlProcessInfo_t *infos)
{
    return running(device, count, infos, 1);
}

NVMLAPI nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *count,
                                                             nvmlProcessInfo_t *infos)
{
    return running(device, count, infos, 1);
}

NVMLAPI nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *count,
                                                          nvmlProcessInfo_v1_t *infos)
{
    return running(device, count, infos, 0);
}

/* No graphics and no MPS server in a VM's vGPU: an empty list. */
static nvmlReturn_t none_running(nvmlDevice_t device, unsigned int *count)
{
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    if (rc)
        return rc;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *count = 0;
    return NVML_SUCCESS;
}

#define NONE_RUNNING(name, info)                                                                 \
    NVMLAPI nvmlReturn_t name(nvmlDevice_t device, unsigned int *count, info *infos)             \
    {                                                                                            \
        (void)infos;                                                                             \
        return none_running(device, count);                                                      \
    }
NONE_RUNNING(nvmlDeviceGetGraphicsRunningProcesses, nvmlProcessInfo_v1_t)
NONE_RUNNING(nvmlDeviceGetGraphicsRunningProcesses_v2, nvmlProcessInfo_t)
NONE_RUNNING(nvmlDeviceGetGraphicsRunningProcesses_v3, nvmlProcessInfo_t)
NONE_RUNNING(nvmlDeviceGetMPSComputeRunningProcesses, nvmlProcessInfo_v1_t)
NONE_RUNNING(nvmlDeviceGetMPSComputeRunningProcesses_v2, nvmlProcessInfo_t)
NONE_RUNNING(nvmlDeviceGetMPSComputeRunningProcesses_v3, nvmlProcessInfo_t)
