/* The fatbins NVIDIA's runtime registers (__cudaRegisterFatBinary, through CUDART_INTERFACE or
 * cuLibraryLoadData): a fatbin goes to the host as its bytes, known by its sha256, sent once. */
#include "export.h"

CUresult kvmgpu_fatbin_load(CUmodule *module, const void *fatbin)
{
    return kvmgpu_image_load(module, fatbin);
}
