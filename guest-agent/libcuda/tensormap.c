/* Tensor maps (the TMA descriptors of Hopper's cuBLAS and convolution kernels): the host's driver
 * encodes them (their layout is the driver's) once the worker has checked the tensor's bytes lie
 * inside one of the session's allocations: a map lets any kernel of the VM read and write them. */
#include "api.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define S (&kvmgpu_session)

/* cuTensorMapEncodeTiled. The last maps encoded are kept with what encoded them, by their bytes, so that
 * cuTensorMapReplaceAddress (a map moved to another tensor of the same shape) encodes it again. */
struct tensor_blob {
    uint64_t dims[5], strides[4];
    uint32_t box[5], element_strides[5];
};
_Static_assert(sizeof(struct tensor_blob) == 112, "TENSOR_MAP blob");

struct encoded {
    uint8_t map[128];
    uint64_t dtype, rank, interleave, swizzle, l2, fill;
    struct tensor_blob blob;
};
#define ENCODED_KEPT 256
static pthread_mutex_t encoded_lock = PTHREAD_MUTEX_INITIALIZER;
static struct encoded encoded[ENCODED_KEPT];
static size_t encoded_next;

static CUresult encode(void *map, struct encoded *e, uint64_t address)
{
    struct kvmgpu_results_tensor_map_encode_tiled out;
    CUresult rc = kvmgpu_tensor_map_encode_tiled(S, e->dtype, e->rank, address, e->interleave, e->swizzle, e->l2,
                                                 e->fill, &e->blob, sizeof e->blob, &out);
    if (rc)
        return rc;
    memcpy(e->map, out.map, sizeof e->map);
    pthread_mutex_lock(&encoded_lock);
    encoded[encoded_next++ % ENCODED_KEPT] = *e;
    pthread_mutex_unlock(&encoded_lock);
    memcpy(map, out.map, sizeof out.map);
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuTensorMapEncodeTiled(void *map, int dtype, uint32_t rank, void *address, const uint64_t *dims,
                                      const uint64_t *strides, const uint32_t *box, const uint32_t *element_strides,
                                      int interleave, int swizzle, int l2, int fill)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!map || rank < 1 || rank > 5 || !dims || (rank > 1 && !strides) || !box || !element_strides || dtype < 0 ||
        interleave < 0 || swizzle < 0 || l2 < 0 || fill < 0)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct encoded e;
    memset(&e, 0, sizeof e);
    e.dtype = (uint64_t)dtype, e.rank = rank, e.interleave = (uint64_t)interleave, e.swizzle = (uint64_t)swizzle;
    e.l2 = (uint64_t)l2, e.fill = (uint64_t)fill;
    for (uint32_t i = 0; i < rank; i++) {
        e.blob.dims[i] = dims[i];
        e.blob.box[i] = box[i];
        e.blob.element_strides[i] = element_strides[i];
        if (i + 1 < rank)
            e.blob.strides[i] = strides[i];
    }
    return encode(map, &e, (uint64_t)(uintptr_t)address);
}

CUAPI CUresult cuTensorMapReplaceAddress(void *map, void *address)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!map)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct encoded e;
    int found = 0;
    pthread_mutex_lock(&encoded_lock);
    for (size_t i = 0; i < ENCODED_KEPT && !found; i++)
        if (memcmp(encoded[i].map, map, sizeof encoded[i].map) == 0 && encoded[i].rank) {
            e = encoded[i];
            found = 1;
        }
    pthread_mutex_unlock(&encoded_lock);
    if (!found) {
        static atomic_int said;
        if (!atomic_exchange(&said, 1))
            kvmgpu_log("cuTensorMapReplaceAddress: a map not among the last %d this process encoded "
                       "(CUDA_ERROR_NOT_SUPPORTED)", ENCODED_KEPT);
        return KVMGPU_CUDA_ERROR_NOT_SUPPORTED;
    }
    return encode(map, &e, (uint64_t)(uintptr_t)address);
}

/* cuTensorMapEncodeIm2col: as cuTensorMapEncodeTiled, for Hopper's convolution kernels. */
CUAPI CUresult cuTensorMapEncodeIm2col(void *map, int dtype, uint32_t rank, void *address, const uint64_t *dims,
                                       const uint64_t *strides, const int *lower, const int *upper,
                                       uint32_t channels, uint32_t pixels, const uint32_t *element_strides,
                                       int interleave, int swizzle, int l2, int fill)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!map || rank < 3 || rank > 5 || !dims || !strides || !lower || !upper || !element_strides || dtype < 0 ||
        interleave < 0 || swizzle < 0 || l2 < 0 || fill < 0)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct __attribute__((packed)) {
        uint64_t dims[5], strides[4];
        int32_t lower[3], upper[3];
        uint32_t element_strides[5], channels, pixels;
    } blob;
    _Static_assert(sizeof blob == 124, "TENSOR_MAP_IM2COL blob");
    memset(&blob, 0, sizeof blob);
    for (uint32_t i = 0; i < rank; i++) {
        blob.dims[i] = dims[i];
        blob.element_strides[i] = element_strides[i];
        if (i + 1 < rank)
            blob.strides[i] = strides[i];
        if (i + 2 < rank) {
            blob.lower[i] = lower[i];
            blob.upper[i] = upper[i];
        }
    }
    blob.channels = channels, blob.pixels = pixels;
    struct kvmgpu_results_tensor_map_encode_im2col out;
    rc = kvmgpu_tensor_map_encode_im2col(S, (uint64_t)dtype, rank, (uint64_t)(uintptr_t)address, (uint64_t)interleave,
                                         (uint64_t)swizzle, (uint64_t)l2, (uint64_t)fill, &blob, sizeof blob, &out);
    if (rc == 0)
        memcpy(map, out.map, sizeof out.map);
    return rc;
}
