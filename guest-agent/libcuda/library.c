/* cuLibrary* and cuKernel* (CUDA 12+), which the runtime uses for the fatbins it registers. A
 * library is a module here; a kernel is the module's function: the driver lets a CUkernel be
 * launched as a CUfunction, and so the two are one handle.
 *
 * Lazily, as CUDA_MODULE_LOADING=LAZY does: code nvcc registered (a fatbin wrapper, in the
 * program's own data for as long as the program runs) goes to the host when a kernel, a global or
 * the module of its library is first asked for. PyTorch registers hundreds of fatbins and uses a
 * few: each eager load was a digest of the image, a question and often the image itself. Other
 * code (a caller's buffer, which it may free after the call) is loaded by the call. */
#include "export.h"

#include <pthread.h>
#include <stdlib.h>

#define FATBIN_WRAPPER_MAGIC 0x466243B1u

struct CUlib_st {
    pthread_mutex_t lock;
    const void *image; /* not yet loaded (a registered fatbin), else NULL */
    CUmodule module;
    CUresult failed; /* the lazy load's error, given again to every later use */
};
typedef struct CUlib_st *CUlibrary;
typedef struct CUfunc_st *CUkernel;

/* Which library each kernel came from (cuKernelGetLibrary; cuBLAS asks). */
struct kernel_of {
    CUkernel kernel;
    CUlibrary library;
};
static pthread_mutex_t kernels_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kernel_of *kernels;
static size_t nkernels, kernels_cap;

static void kernel_found(CUkernel kernel, CUlibrary library)
{
    pthread_mutex_lock(&kernels_lock);
    size_t i = 0;
    while (i < nkernels && kernels[i].kernel != kernel)
        i++;
    if (i < nkernels) {
        kernels[i].library = library;
    } else {
        struct kernel_of *grown = kvmgpu_grow(kernels, nkernels, &kernels_cap, sizeof *kernels);
        if (grown) { /* (else it is not known here: cuKernelGetLibrary says INVALID_HANDLE) */
            kernels = grown;
            kernels[nkernels++] = (struct kernel_of){kernel, library};
        }
    }
    pthread_mutex_unlock(&kernels_lock);
}

static void kernels_forget(CUlibrary library)
{
    pthread_mutex_lock(&kernels_lock);
    for (size_t i = 0; i < nkernels;)
        if (kernels[i].library == library)
            kernels[i] = kernels[--nkernels];
        else
            i++;
    pthread_mutex_unlock(&kernels_lock);
}

/* The image of `code`: a fatbin wrapper (what nvcc's code registers) is followed to its fatbin. */
static const void *image_of(const void *code)
{
    const uint32_t *w = code;
    if (w[0] == FATBIN_WRAPPER_MAGIC) {
        const void *const *fatbin = (const void *const *)((const uint8_t *)code + 8);
        return *fatbin;
    }
    return code;
}

CUAPI CUresult cuLibraryLoadData(CUlibrary *library, const void *code, CUjit_option *jit_options, void **jit_values,
                                 unsigned int njit, int *options, void **values, unsigned int noptions)
{
    (void)jit_options, (void)jit_values, (void)njit, (void)options, (void)values, (void)noptions;
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!library || !code)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct CUlib_st *lib = calloc(1, sizeof *lib);
    if (!lib)
        return KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
    const void *image = image_of(code);
    if (!image) {
        free(lib);
        return KVMGPU_CUDA_ERROR_INVALID_IMAGE;
    }
    pthread_mutex_init(&lib->lock, NULL);
    if (image != code && !kvmgpu_eager_loading()) {
        lib->image = image;
    } else if ((rc = kvmgpu_fatbin_load(&lib->module, image)) != 0) {
        free(lib);
        return rc;
    }
    if (kvmgpu_tracing())
        kvmgpu_log("cuLibraryLoadData: library %p, module %p", (void *)lib, (void *)lib->module);
    *library = lib;
    return KVMGPU_CUDA_SUCCESS;
}

/* The library's module, loaded now if it was not. */
static CUresult loaded(CUlibrary library, CUmodule *module)
{
    pthread_mutex_lock(&library->lock);
    CUresult rc = library->failed;
    if (rc == 0 && library->image) {
        rc = kvmgpu_fatbin_load(&library->module, library->image);
        if (kvmgpu_tracing())
            kvmgpu_log("library %p loaded when first used: %d", (void *)library, rc);
        if (rc == 0)
            library->image = NULL;
        else if (rc != KVMGPU_CUDA_ERROR_OUT_OF_MEMORY && rc != KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE)
            library->failed = rc; /* the image itself: no use sending it again */
    }
    *module = library->module;
    pthread_mutex_unlock(&library->lock);
    return rc;
}

CUAPI CUresult cuLibraryUnload(CUlibrary library)
{
    if (!library)
        return KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    CUresult rc = kvmgpu_initialised();
    if (rc == 0 && !library->image && !library->failed)
        rc = kvmgpu_module_unload(&kvmgpu_session, (uint64_t)(uintptr_t)library->module, 0);
    kernels_forget(library);
    pthread_mutex_destroy(&library->lock);
    free(library);
    return rc;
}

CUAPI CUresult cuLibraryGetModule(CUmodule *module, CUlibrary library)
{
    if (!module)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (!library)
        return KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    return loaded(library, module);
}

CUAPI CUresult cuLibraryGetKernel(CUkernel *kernel, CUlibrary library, const char *name)
{
    if (!kernel || !name)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (!library)
        return KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    CUfunction f;
    CUmodule module;
    CUresult rc = loaded(library, &module);
    if (rc == 0)
        rc = kvmgpu_function_get(&f, module, name);
    if (kvmgpu_tracing())
        kvmgpu_log("cuLibraryGetKernel(%p, %.256s): %d", (void *)library, name, rc);
    if (rc && rc != KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE) /* the runtime shows only its own error */
        kvmgpu_log("the vGPU cannot run kernel %.256s: %s", name,
                   kvmgpu_session.last_error[0] ? kvmgpu_session.last_error : "no reason given");
    if (rc == 0) {
        *kernel = f;
        kernel_found(f, library);
    }
    return rc;
}

CUAPI CUresult cuKernelGetLibrary(CUlibrary *library, CUkernel kernel)
{
    if (!library)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    CUresult rc = KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&kernels_lock);
    for (size_t i = 0; i < nkernels; i++)
        if (kernels[i].kernel == kernel) {
            *library = kernels[i].library;
            rc = KVMGPU_CUDA_SUCCESS;
            break;
        }
    pthread_mutex_unlock(&kernels_lock);
    return rc;
}

CUAPI CUresult cuKernelGetFunction(CUfunction *function, CUkernel kernel)
{
    if (!function)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (!kernel)
        return KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    *function = kernel;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuLibraryGetGlobal(CUdeviceptr *dptr, size_t *bytes, CUlibrary library, const char *name)
{
    if (!library)
        return KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    CUmodule module;
    CUresult rc = loaded(library, &module);
    return rc ? rc : kvmgpu_global_get(dptr, bytes, module, name);
}
