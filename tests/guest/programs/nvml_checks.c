/* NVML's contract at the C level, against the guest's libnvidia-ml.so.1 (built plain and with
 * AddressSanitizer/UBSan by tests/guest/test_nvml.py): NULL pointers, a bad index or handle, short
 * buffers, the sizes asked back, uninitialised calls, what a VM is not given. The prototypes are
 * NVML's (no nvml.h needed); a line "OK what" or "FAIL what", then DONE.
 *
 *     nvml_checks [PID]    (PID: a process of the VM that holds device memory, expected listed) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;
typedef struct { unsigned gpu, memory; } nvmlUtilization_t;
typedef struct { unsigned pid; unsigned long long usedGpuMemory; unsigned gi, ci; } nvmlProcessInfo_t;
typedef struct { char legacy[16]; unsigned domain, bus, device, id, sub; char busId[32]; } nvmlPciInfo_t;

int nvmlInit_v2(void);
int nvmlInitWithFlags(unsigned);
int nvmlShutdown(void);
const char *nvmlErrorString(int);
int nvmlDeviceGetCount_v2(unsigned *);
int nvmlDeviceGetHandleByIndex_v2(unsigned, nvmlDevice_t *);
int nvmlDeviceGetHandleByUUID(const char *, nvmlDevice_t *);
int nvmlDeviceGetHandleByPciBusId_v2(const char *, nvmlDevice_t *);
int nvmlDeviceGetName(nvmlDevice_t, char *, unsigned);
int nvmlDeviceGetUUID(nvmlDevice_t, char *, unsigned);
int nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);
int nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t, nvmlMemory_v2_t *);
int nvmlDeviceGetUtilizationRates(nvmlDevice_t, nvmlUtilization_t *);
int nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t, unsigned *, nvmlProcessInfo_t *);
int nvmlDeviceGetPciInfo_v3(nvmlDevice_t, nvmlPciInfo_t *);
int nvmlDeviceGetTemperature(nvmlDevice_t, int, unsigned *);
int nvmlDeviceGetPowerUsage(nvmlDevice_t, unsigned *);
int nvmlDeviceGetClockInfo(nvmlDevice_t, int, unsigned *);
int nvmlDeviceGetFanSpeed(nvmlDevice_t, unsigned *);
int nvmlSystemGetDriverVersion(char *, unsigned);

static int failures;

static void expect(const char *what, int got, int want)
{
    if (got == want) {
        printf("OK %s\n", what);
    } else {
        printf("FAIL %s: %d (%s), expected %d (%s)\n", what, got, nvmlErrorString(got), want, nvmlErrorString(want));
        failures++;
    }
}

int main(int argc, char **argv)
{
    nvmlDevice_t dev = NULL;
    unsigned count = 0, value;
    char text[96];
    expect("uninitialised count", nvmlDeviceGetCount_v2(&count), 1);
    expect("shutdown before init", nvmlShutdown(), 1);
    expect("init", nvmlInit_v2(), 0);
    expect("init again (counted)", nvmlInit_v2(), 0);
    expect("count", nvmlDeviceGetCount_v2(&count), 0);
    expect("count is 1", (int)count, 1);
    expect("count NULL", nvmlDeviceGetCount_v2(NULL), 2);
    expect("handle index 1", nvmlDeviceGetHandleByIndex_v2(1, &dev), 2);
    expect("handle NULL", nvmlDeviceGetHandleByIndex_v2(0, NULL), 2);
    expect("handle", nvmlDeviceGetHandleByIndex_v2(0, &dev), 0);
    expect("name, a NULL handle", nvmlDeviceGetName(NULL, text, sizeof text), 2);
    expect("name, a made-up handle", nvmlDeviceGetName((nvmlDevice_t)text, text, sizeof text), 2);
    expect("name, 4 bytes", nvmlDeviceGetName(dev, text, 4), 7);
    expect("name, NULL", nvmlDeviceGetName(dev, NULL, 96), 2);
    expect("name", nvmlDeviceGetName(dev, text, sizeof text), 0);
    expect("uuid, 8 bytes", nvmlDeviceGetUUID(dev, text, 8), 7);
    expect("uuid", nvmlDeviceGetUUID(dev, text, sizeof text), 0);
    nvmlDevice_t same = NULL;
    expect("by uuid", nvmlDeviceGetHandleByUUID(text, &same), 0);
    expect("by uuid is the handle", same == dev, 1);
    expect("by another uuid", nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000", &same), 6);
    expect("by uuid NULL", nvmlDeviceGetHandleByUUID(NULL, &same), 2);
    nvmlPciInfo_t pci;
    expect("pci", nvmlDeviceGetPciInfo_v3(dev, &pci), 0);
    expect("by pci bus id", nvmlDeviceGetHandleByPciBusId_v2(pci.busId, &same), 0);
    expect("by pci bus id, short form", nvmlDeviceGetHandleByPciBusId_v2(pci.legacy + 5, &same), 0);
    expect("by another pci bus id", nvmlDeviceGetHandleByPciBusId_v2("0000:ff:1f.0", &same), 6);
    expect("by a bad pci bus id", nvmlDeviceGetHandleByPciBusId_v2("not a bus", &same), 2);
    expect("driver version, 2 bytes", nvmlSystemGetDriverVersion(text, 2), 7);
    nvmlMemory_t mem;
    expect("memory NULL", nvmlDeviceGetMemoryInfo(dev, NULL), 2);
    expect("memory", nvmlDeviceGetMemoryInfo(dev, &mem), 0);
    expect("used + free = total", mem.used + mem.free == mem.total, 1);
    nvmlMemory_v2_t mem2 = {.version = 1};
    expect("memory v2, a wrong version", nvmlDeviceGetMemoryInfo_v2(dev, &mem2), 25);
    mem2.version = (unsigned)sizeof mem2 | 2u << 24;
    expect("memory v2", nvmlDeviceGetMemoryInfo_v2(dev, &mem2), 0);
    expect("memory v2 total", mem2.total == mem.total, 1);
    nvmlUtilization_t util;
    expect("utilisation NULL", nvmlDeviceGetUtilizationRates(dev, NULL), 2);
    expect("utilisation", nvmlDeviceGetUtilizationRates(dev, &util), 0);
    expect("utilisation is a percent", util.gpu <= 100 && util.memory == 0, 1);
    expect("processes, NULL count", nvmlDeviceGetComputeRunningProcesses_v3(dev, NULL, NULL), 2);
    if (argc > 1) {
        unsigned pid = (unsigned)strtoul(argv[1], NULL, 10);
        nvmlProcessInfo_t procs[8];
        count = 0;
        expect("processes, no room", nvmlDeviceGetComputeRunningProcesses_v3(dev, &count, NULL), 7);
        expect("processes, the count asked back", count >= 1, 1);
        count = 8;
        expect("processes", nvmlDeviceGetComputeRunningProcesses_v3(dev, &count, procs), 0);
        int found = 0;
        for (unsigned i = 0; i < count; i++)
            found |= procs[i].pid == pid && procs[i].usedGpuMemory > 0 && procs[i].gi == 0xFFFFFFFFu;
        expect("processes name the holder", found, 1);
    }
    expect("temperature", nvmlDeviceGetTemperature(dev, 0, &value), 3);
    expect("temperature NULL", nvmlDeviceGetTemperature(dev, 0, NULL), 2);
    expect("power", nvmlDeviceGetPowerUsage(dev, &value), 3);
    expect("clock", nvmlDeviceGetClockInfo(dev, 0, &value), 3);
    expect("fan", nvmlDeviceGetFanSpeed(dev, &value), 3);
    expect("fan, a bad handle", nvmlDeviceGetFanSpeed(NULL, &value), 2);
    expect("error string", strcmp(nvmlErrorString(7), "Insufficient Size"), 0);
    expect("shutdown", nvmlShutdown(), 0);
    expect("still initialised once", nvmlDeviceGetCount_v2(&count), 0);
    expect("shutdown", nvmlShutdown(), 0);
    expect("shut down", nvmlDeviceGetName(dev, text, sizeof text), 1);
    printf("%s\n", failures ? "FAILED" : "DONE");
    return failures != 0;
}
