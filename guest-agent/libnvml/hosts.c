/* The guest's NVML: what a VM is not given (docs/guest.md, NVML). */
#include <stddef.h>

#include "nvml_state.h"

/* A VM is not given the GPU's sensors, clocks, power, fans, ECC, PCIe counters or MIG: they
 * describe the whole GPU and its other tenants. The arguments are checked first, as NVML does. */

#define HOSTS(name, params, ...)                                                                 \
    NVMLAPI nvmlReturn_t name params                                                             \
    {                                                                                            \
        const void *outs[] = {__VA_ARGS__};                                                      \
        nvmlReturn_t rc = kvmgpu_nvml_check(device);                                                         \
        for (size_t i = 0; rc == NVML_SUCCESS && i < sizeof outs / sizeof *outs; i++)            \
            if (!outs[i])                                                                        \
                rc = NVML_ERROR_INVALID_ARGUMENT;                                                \
        return rc ? rc : NVML_ERROR_NOT_SUPPORTED;                                               \
    }
HOSTS(nvmlDeviceGetTemperature, (nvmlDevice_t device, int sensor, unsigned int *temp), temp + 0 * sensor)
HOSTS(nvmlDeviceGetTemperatureThreshold, (nvmlDevice_t device, int type, unsigned int *temp), temp + 0 * type)
HOSTS(nvmlDeviceGetPowerUsage, (nvmlDevice_t device, unsigned int *power), power)
HOSTS(nvmlDeviceGetPowerManagementLimit, (nvmlDevice_t device, unsigned int *limit), limit)
HOSTS(nvmlDeviceGetPowerManagementDefaultLimit, (nvmlDevice_t device, unsigned int *limit), limit)
HOSTS(nvmlDeviceGetEnforcedPowerLimit, (nvmlDevice_t device, unsigned int *limit), limit)
HOSTS(nvmlDeviceGetPowerState, (nvmlDevice_t device, int *state), state)
HOSTS(nvmlDeviceGetPerformanceState, (nvmlDevice_t device, int *state), state)
HOSTS(nvmlDeviceGetTotalEnergyConsumption, (nvmlDevice_t device, unsigned long long *energy), energy)
HOSTS(nvmlDeviceGetClockInfo, (nvmlDevice_t device, int type, unsigned int *clock), clock + 0 * type)
HOSTS(nvmlDeviceGetMaxClockInfo, (nvmlDevice_t device, int type, unsigned int *clock), clock + 0 * type)
HOSTS(nvmlDeviceGetApplicationsClock, (nvmlDevice_t device, int type, unsigned int *clock), clock + 0 * type)
HOSTS(nvmlDeviceGetClock, (nvmlDevice_t device, int type, int id, unsigned int *clock), clock + 0 * (type + id))
HOSTS(nvmlDeviceGetCurrentClocksThrottleReasons, (nvmlDevice_t device, unsigned long long *reasons), reasons)
HOSTS(nvmlDeviceGetCurrentClocksEventReasons, (nvmlDevice_t device, unsigned long long *reasons), reasons)
HOSTS(nvmlDeviceGetFanSpeed, (nvmlDevice_t device, unsigned int *speed), speed)
HOSTS(nvmlDeviceGetFanSpeed_v2, (nvmlDevice_t device, unsigned int fan, unsigned int *speed), speed + 0 * fan)
HOSTS(nvmlDeviceGetNumFans, (nvmlDevice_t device, unsigned int *fans), fans)
HOSTS(nvmlDeviceGetEncoderUtilization, (nvmlDevice_t device, unsigned int *util, unsigned int *period), util, period)
HOSTS(nvmlDeviceGetDecoderUtilization, (nvmlDevice_t device, unsigned int *util, unsigned int *period), util, period)
HOSTS(nvmlDeviceGetPcieThroughput, (nvmlDevice_t device, int counter, unsigned int *value), value + 0 * counter)
HOSTS(nvmlDeviceGetCurrPcieLinkGeneration, (nvmlDevice_t device, unsigned int *gen), gen)
HOSTS(nvmlDeviceGetCurrPcieLinkWidth, (nvmlDevice_t device, unsigned int *width), width)
HOSTS(nvmlDeviceGetMaxPcieLinkGeneration, (nvmlDevice_t device, unsigned int *gen), gen)
HOSTS(nvmlDeviceGetMaxPcieLinkWidth, (nvmlDevice_t device, unsigned int *width), width)
HOSTS(nvmlDeviceGetEccMode, (nvmlDevice_t device, int *current, int *pending), current, pending)
HOSTS(nvmlDeviceGetTotalEccErrors, (nvmlDevice_t device, int type, int counter, unsigned long long *count),
      count + 0 * (type + counter))
HOSTS(nvmlDeviceGetMigMode, (nvmlDevice_t device, unsigned int *current, unsigned int *pending), current, pending)
HOSTS(nvmlDeviceGetPersistenceMode, (nvmlDevice_t device, int *mode), mode)
HOSTS(nvmlDeviceGetDisplayMode, (nvmlDevice_t device, int *mode), mode)
HOSTS(nvmlDeviceGetDisplayActive, (nvmlDevice_t device, int *active), active)
HOSTS(nvmlDeviceGetBAR1MemoryInfo, (nvmlDevice_t device, void *bar1), bar1)
HOSTS(nvmlDeviceGetSerial, (nvmlDevice_t device, char *serial, unsigned int length), serial + 0 * length)
HOSTS(nvmlDeviceGetVbiosVersion, (nvmlDevice_t device, char *version, unsigned int length), version + 0 * length)
HOSTS(nvmlDeviceGetBoardId, (nvmlDevice_t device, unsigned int *board), board)
/* No NVLink and no fabric in a VM's vGPU (PyTorch's c10 DriverAPI needs these names to exist). */
HOSTS(nvmlDeviceGetNvLinkState, (nvmlDevice_t device, unsigned int link, int *active), active + 0 * link)
HOSTS(nvmlDeviceGetNvLinkCapability, (nvmlDevice_t device, unsigned int link, int cap, unsigned int *result),
      result + 0 * (link + (unsigned)cap))
HOSTS(nvmlDeviceGetNvLinkRemoteDeviceType, (nvmlDevice_t device, unsigned int link, int *type), type + 0 * link)
HOSTS(nvmlDeviceGetNvLinkRemotePciInfo_v2, (nvmlDevice_t device, unsigned int link, nvmlPciInfo_t *pci),
      pci + 0 * link)
HOSTS(nvmlDeviceGetGpuFabricInfoV, (nvmlDevice_t device, void *info), info)
