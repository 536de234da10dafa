/* The fatbins NVIDIA's runtime registers (__cudaRegisterFatBinary, then cuLibraryLoadData or
 * CUDART_INTERFACE): a fatbin goes to the host as its bytes (its header gives the size: magic
 * 0xBA55ED50, version u16, header size u16, entries' size u64), known by its sha256 and sent only
 * when the host does not have it (kvmgpu_client_module_load). The program sees only the runtime's
 * error when the host cannot load it (cudaErrorNoKernelImageForDevice, ...): the host's reason
 * is logged. */
#include "export.h"

CUresult kvmgpu_fatbin_load(CUmodule *module, const void *fatbin)
{
    CUresult rc = kvmgpu_image_load(module, fatbin);
    if (rc && rc != KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE) {
        const char *name = NULL;
        cuGetErrorName(rc, &name);
        kvmgpu_log("the vGPU cannot load the program's kernels (%s): %s", name ? name : "?",
                   kvmgpu_session.last_error[0] ? kvmgpu_session.last_error : "no reason given");
    }
    return rc;
}
