/* libnvidia-ml.so.1 for the guest: NVML answering for the vGPU as this VM sees it (docs/guest.md,
 * "NVML"). One device, index 0. Its name, UUID, compute capability, PCI location and the CUDA
 * driver version are the WELCOME's (cached for the session); memory (the quota and what the VM
 * holds), this VM's utilisation and its processes are asked of the worker each time, in a
 * session of its own (role "monitor": no window of the region, left out of the process list).
 * This file: init, the system, finding the device and what the WELCOME says; usage.c: what the
 * worker is asked; hosts.c: what a VM is not given (sensors, clocks, power: NOT_SUPPORTED). A
 * function in none of them is missing, which nvidia-ml-py reports as NVML_ERROR_FUNCTION_NOT_FOUND. */
#define _GNU_SOURCE
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "nvml_state.h"

struct nvmlDevice_st {
    int index;
};
static struct nvmlDevice_st the_device = {0};

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int init_count; /* nvmlInit calls not yet shut down */
static int devices;    /* 1 with a session; 0 after NVML_INIT_FLAG_NO_GPUS found no vGPU */
struct kvmgpu_client kvmgpu_nvml_session;
#define DEVICE (kvmgpu_nvml_session.device) /* the WELCOME's, cached for the session */
static char bus_id[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE], bus_id_legacy[NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE];
static unsigned pci_domain, pci_bus, pci_device;

static const struct kvmgpu_client_kind monitor = {"libnvidia-ml", "monitor", 0};

static int attribute(int id)
{
    return id < KVMGPU_CU_DEVICE_ATTRIBUTE_MAX && DEVICE.has_attribute[id] ? DEVICE.attribute[id] : 0;
}

static void cache_pci(void)
{
    pci_domain = (unsigned)attribute(50); /* CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID */
    pci_bus = (unsigned)attribute(33);    /* _PCI_BUS_ID */
    pci_device = (unsigned)attribute(34); /* _PCI_DEVICE_ID: the device number on the bus */
    snprintf(bus_id, sizeof bus_id, "%08X:%02X:%02X.0", pci_domain & 0xFFFFFFFFu, pci_bus & 0xFFu, pci_device & 0xFFu);
    snprintf(bus_id_legacy, sizeof bus_id_legacy, "%04X:%02X:%02X.0", pci_domain & 0xFFFFu, pci_bus & 0xFFu,
             pci_device & 0xFFu);
}

/* --- init and shutdown -------------------------------------------------------------------------- */

NVMLAPI nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    nvmlReturn_t rc = NVML_SUCCESS;
    pthread_mutex_lock(&init_lock);
    if (init_count == 0) {
        char err[KVMGPU_CLIENT_ERR];
        if (kvmgpu_client_open(&kvmgpu_nvml_session, &monitor, err, sizeof err) == 0) {
            devices = 1;
            cache_pci();
        } else if (flags & NVML_INIT_FLAG_NO_GPUS) {
            devices = 0;
        } else {
            kvmgpu_log("NVML: %s", err);
            rc = NVML_ERROR_DRIVER_NOT_LOADED;
        }
    }
    if (rc == NVML_SUCCESS)
        init_count++;
    pthread_mutex_unlock(&init_lock);
    return rc;
}

NVMLAPI nvmlReturn_t nvmlInit_v2(void)
{
    return nvmlInitWithFlags(0);
}

NVMLAPI nvmlReturn_t nvmlInit(void)
{
    return nvmlInitWithFlags(0);
}

NVMLAPI nvmlReturn_t nvmlShutdown(void)
{
    nvmlReturn_t rc = NVML_SUCCESS;
    pthread_mutex_lock(&init_lock);
    if (init_count == 0)
        rc = NVML_ERROR_UNINITIALIZED;
    else if (--init_count == 0 && devices) {
        kvmgpu_client_close(&kvmgpu_nvml_session, "nvmlShutdown");
        devices = 0;
    }
    pthread_mutex_unlock(&init_lock);
    return rc;
}

static nvmlReturn_t ready(void)
{
    return __atomic_load_n(&init_count, __ATOMIC_ACQUIRE) > 0 ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED;
}

nvmlReturn_t kvmgpu_nvml_check(nvmlDevice_t device)
{
    nvmlReturn_t rc = ready();
    if (rc == NVML_SUCCESS && (device != &the_device || !devices))
        rc = NVML_ERROR_INVALID_ARGUMENT;
    return rc;
}

nvmlReturn_t kvmgpu_nvml_from_cuda(int status)
{
    if (status == KVMGPU_CUDA_SUCCESS)
        return NVML_SUCCESS;
    if (status == KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE)
        return NVML_ERROR_GPU_IS_LOST;
    if (status == KVMGPU_CUDA_ERROR_NOT_SUPPORTED)
        return NVML_ERROR_NOT_SUPPORTED;
    return NVML_ERROR_UNKNOWN;
}

/* Copies `text` into the caller's buffer of `length` bytes, or INSUFFICIENT_SIZE. */
static nvmlReturn_t give_text(const char *text, char *out, unsigned int length)
{
    if (!out)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(text) + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, text, strlen(text) + 1);
    return NVML_SUCCESS;
}

NVMLAPI const char *nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_IRQ_ISSUE: return "Interrupt Request Issue";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_CORRUPTED_INFOROM: return "Corrupted infoROM";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
    case NVML_ERROR_OPERATING_SYSTEM: return "The operating system has blocked the request.";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_NO_DATA: return "No data";
    case NVML_ERROR_VGPU_ECC_NOT_SUPPORTED: return "ECC is not supported on this vGPU";
    case NVML_ERROR_INSUFFICIENT_RESOURCES: return "Insufficient resources";
    case NVML_ERROR_FREQ_NOT_SUPPORTED: return "Frequency not supported";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    case NVML_ERROR_DEPRECATED: return "Deprecated";
    case NVML_ERROR_NOT_READY: return "Not ready";
    case NVML_ERROR_GPU_NOT_FOUND: return "GPU not found";
    case NVML_ERROR_INVALID_STATE: return "Invalid state";
    default: return "Unknown Error";
    }
}

/* --- the system --------------------------------------------------------------------------------- */

/* The host driver's CUDA version (the WELCOME's), "13.0": the kernel module's version is not sent
 * to the guest. */
static void driver_text(char *out, size_t n)
{
    int v = DEVICE.driver_version;
    snprintf(out, n, "%d.%d", v / 1000, (v % 1000) / 10);
}

NVMLAPI nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    char text[32];
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    driver_text(text, sizeof text);
    return give_text(text, version, length);
}

NVMLAPI nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    char text[32];
    driver_text(text, sizeof text); /* NVML's own version is its driver's */
    return give_text(text, version, length);
}

NVMLAPI nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (!version)
        return NVML_ERROR_INVALID_ARGUMENT;
    *version = DEVICE.driver_version;
    return NVML_SUCCESS;
}

NVMLAPI nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version)
{
    return nvmlSystemGetCudaDriverVersion(version);
}

/* A guest process's name, as NVML gives it (its /proc comm). */
NVMLAPI nvmlReturn_t nvmlSystemGetProcessName(unsigned int pid, char *name, unsigned int length)
{
    char path[64], text[256];
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (!name || length == 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(path, sizeof path, "/proc/%u/comm", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NVML_ERROR_NOT_FOUND;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    while (n && text[n - 1] == '\n')
        n--;
    text[n] = '\0';
    snprintf(name, length, "%s", text); /* NVML truncates to the buffer */
    return NVML_SUCCESS;
}

/* --- finding the device ------------------------------------------------------------------------- */

NVMLAPI nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *count = (unsigned)devices;
    return NVML_SUCCESS;
}

NVMLAPI nvmlReturn_t nvmlDeviceGetCount(unsigned int *count)
{
    return nvmlDeviceGetCount_v2(count);
}

NVMLAPI nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (!device || index >= (unsigned)devices)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &the_device;
    return NVML_SUCCESS;
}

NVMLAPI nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

NVMLAPI nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (!uuid || !device)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!devices || strcasecmp(uuid, DEVICE.uuid_text) != 0)
        return NVML_ERROR_NOT_FOUND;
    *device = &the_device;
    return NVML_SUCCESS;
}

/* "domain:bus:device.function" in hex, the domain optional (NVML takes both forms). */
static int parse_bus_id(const char *text, unsigned *domain, unsigned *bus, unsigned *dev)
{
    unsigned a, b, c, f;
    char end;
    if (sscanf(text, "%x:%x:%x.%x%c", &a, &b, &c, &f, &end) == 4) {
        *domain = a, *bus = b, *dev = c;
        return 0;
    }
    if (sscanf(text, "%x:%x.%x%c", &b, &c, &f, &end) == 3) {
        *domain = 0, *bus = b, *dev = c;
        return 0;
    }
    return -1;
}

NVMLAPI nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device)
{
    unsigned domain, bus, dev;
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (!pciBusId || !device || parse_bus_id(pciBusId, &domain, &bus, &dev))
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!devices || domain != pci_domain || bus != pci_bus || dev != pci_device)
        return NVML_ERROR_NOT_FOUND;
    *device = &the_device;
    return NVML_SUCCESS;
}

NVMLAPI nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device)
{
    return nvmlDeviceGetHandleByPciBusId_v2(pciBusId, device);
}

/* --- what the WELCOME says ---------------------------------------------------------------------- */

NVMLAPI nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    return rc ? rc : give_text(DEVICE.name, name, length);
}

NVMLAPI nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    return rc ? rc : give_text(DEVICE.uuid_text, uuid, length);
}

NVMLAPI nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    if (rc)
        return rc;
    if (!index)
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = (unsigned)device->index;
    return NVML_SUCCESS;
}

NVMLAPI nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minor)
{
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    if (rc)
        return rc;
    if (!minor)
        return NVML_ERROR_INVALID_ARGUMENT;
    *minor = (unsigned)device->index; /* the guest has no /dev/nvidiaN: its index */
    return NVML_SUCCESS;
}

NVMLAPI nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor)
{
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    if (rc)
        return rc;
    if (!major || !minor)
        return NVML_ERROR_INVALID_ARGUMENT;
    *major = DEVICE.cc_major;
    *minor = DEVICE.cc_minor;
    return NVML_SUCCESS;
}

NVMLAPI nvmlReturn_t nvmlDeviceGetBrand(nvmlDevice_t device, int *type)
{
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    if (rc)
        return rc;
    if (!type)
        return NVML_ERROR_INVALID_ARGUMENT;
    *type = NVML_BRAND_NVIDIA;
    return NVML_SUCCESS;
}

/* nvmlDeviceArchitecture_t from the compute capability. */
NVMLAPI nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, unsigned int *arch)
{
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    if (rc)
        return rc;
    if (!arch)
        return NVML_ERROR_INVALID_ARGUMENT;
    int major = DEVICE.cc_major, minor = DEVICE.cc_minor;
    *arch = major == 3 ? 2 : major == 5 ? 3 : major == 6 ? 4 : major == 7 ? (minor < 5 ? 5 : 6)
          : major == 8 ? (minor == 9 ? 8 : 7) : major == 9 ? 9 : major == 10 || major == 11 || major == 12 ? 10
          : NVML_DEVICE_ARCH_UNKNOWN;
    return NVML_SUCCESS;
}

NVMLAPI nvmlReturn_t nvmlDeviceGetComputeMode(nvmlDevice_t device, int *mode)
{
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    if (rc)
        return rc;
    if (!mode)
        return NVML_ERROR_INVALID_ARGUMENT;
    *mode = NVML_COMPUTEMODE_DEFAULT; /* the VM's processes share it */
    return NVML_SUCCESS;
}

static void fill_pci(nvmlPciInfo_t *pci)
{
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%s", bus_id_legacy);
    snprintf(pci->busId, sizeof pci->busId, "%s", bus_id);
    pci->domain = pci_domain;
    pci->bus = pci_bus;
    pci->device = pci_device;
    /* pciDeviceId, pciSubSystemId: 0, the host's product ids are not sent to the guest */
}

NVMLAPI nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    nvmlReturn_t rc = kvmgpu_nvml_check(device);
    if (rc)
        return rc;
    if (!pci)
        return NVML_ERROR_INVALID_ARGUMENT;
    fill_pci(pci);
    return NVML_SUCCESS;
}

NVMLAPI nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    return nvmlDeviceGetPciInfo_v3(device, pci);
}

NVMLAPI nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_v1_t *pci)
{
    nvmlPciInfo_t full;
    nvmlReturn_t rc = nvmlDeviceGetPciInfo_v3(device, pci ? &full : NULL);
    if (rc)
        return rc;
    memset(pci, 0, sizeof *pci);
    memcpy(pci->busId, full.busIdLegacy, sizeof pci->busId);
    pci->domain = full.domain, pci->bus = full.bus, pci->device = full.device;
    return NVML_SUCCESS;
}
