/* What the guest's NVML files share (nvml.c keeps it): the monitor session with the worker, the
 * device check every device query starts with, and how a failed call to the worker reads in NVML. */
#ifndef KVMGPU_NVML_STATE_H
#define KVMGPU_NVML_STATE_H

#include "client.h"
#include "nvml_abi.h"

extern struct kvmgpu_client kvmgpu_nvml_session;
/* The device argument: NVML initialised, and the one handle this library gives; else its error. */
nvmlReturn_t kvmgpu_nvml_check(nvmlDevice_t device);
/* A failed call to the worker as NVML says it: the channel gone is a lost GPU. */
nvmlReturn_t kvmgpu_nvml_from_cuda(int status);

#endif
