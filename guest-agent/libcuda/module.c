/* Modules and launches. A module image goes to the host as its bytes (PTX text, a cubin, or a
 * fatbin: their sizes read from their headers); a kernel's parameters are packed as the
 * parameter table MODULE_GET_FUNCTION returns lays them out. */
#include "export.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S (&kvmgpu_session)
#define FATBIN_MAGIC 0xBA55ED50u
#define MAX_IMAGE_BYTES ((size_t)1 << 31)

struct function {
    uint64_t handle;
    uint32_t nparams;
    uint32_t argsize; /* the parameter bytes: the end of the last parameter */
    struct kvmgpu_param *params;
    char *name; /* as looked up (cuFuncGetName) */
};

static pthread_mutex_t functions_lock = PTHREAD_MUTEX_INITIALIZER;
static struct function *functions; /* every function this process looked up */
static size_t nfunctions, functions_cap;
/* An index of `functions` by handle (open addressing; 0 an empty slot, else the entry's index + 1),
 * at most half full: every launch finds its function's parameter table here. */
static uint32_t *slots;
static size_t nslots;

static size_t slot_of(uint64_t handle, size_t n)
{
    return (size_t)((handle * 0x9E3779B97F4A7C15ull) >> 32) & (n - 1);
}

/* The function of `handle` (functions_lock held), or NULL. */
static struct function *lookup(uint64_t handle)
{
    if (!nslots)
        return NULL;
    for (size_t i = slot_of(handle, nslots);; i = (i + 1) & (nslots - 1)) {
        if (!slots[i])
            return NULL;
        if (functions[slots[i] - 1].handle == handle)
            return &functions[slots[i] - 1];
    }
}

/* Index entry `at` (functions_lock held); 0 or OUT_OF_MEMORY. */
static CUresult index_function(size_t at)
{
    if (2 * (nfunctions + 1) > nslots) {
        size_t n = nslots ? 2 * nslots : 128;
        uint32_t *grown = calloc(n, sizeof *grown);
        if (!grown)
            return KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
        for (size_t e = 0; e < nfunctions; e++) {
            size_t i = slot_of(functions[e].handle, n);
            while (grown[i])
                i = (i + 1) & (n - 1);
            grown[i] = (uint32_t)(e + 1);
        }
        free(slots);
        slots = grown;
        nslots = n;
    }
    size_t i = slot_of(functions[at].handle, nslots);
    while (slots[i])
        i = (i + 1) & (nslots - 1);
    slots[i] = (uint32_t)(at + 1);
    return KVMGPU_CUDA_SUCCESS;
}

/* The image's size: a fatbin's and a cubin's from their headers, PTX's to its NUL. 0: unknown. */
static size_t image_size(const void *image)
{
    const uint8_t *p = image; /* (byte by byte, stopping at a short text's NUL) */
    if (p[0] == (FATBIN_MAGIC & 0xFF) && p[1] == (FATBIN_MAGIC >> 8 & 0xFF) && p[2] == (FATBIN_MAGIC >> 16 & 0xFF) &&
        p[3] == FATBIN_MAGIC >> 24) { /* magic u32, version u16, header size u16, files' size u64 */
        uint16_t hsize;
        uint64_t fsize;
        memcpy(&hsize, p + 6, 2);
        memcpy(&fsize, p + 8, 8);
        return (size_t)hsize + (size_t)fsize;
    }
    if (p[0] == 0x7f && p[1] == 'E' && p[2] == 'L' && p[3] == 'F' && p[4] == 2) { /* ELF64: the section headers end it */
        uint64_t shoff;
        uint16_t shentsize, shnum;
        memcpy(&shoff, p + 0x28, 8);
        memcpy(&shentsize, p + 0x3A, 2);
        memcpy(&shnum, p + 0x3C, 2);
        return (size_t)(shoff + (uint64_t)shentsize * shnum);
    }
    return strlen(image) + 1; /* PTX, with its NUL as the driver reads it */
}

CUAPI CUresult cuModuleLoadData(CUmodule *module, const void *image)
{
    CUresult rc = kvmgpu_ready();
    return rc ? rc : kvmgpu_image_load(module, image);
}

CUresult kvmgpu_image_load(CUmodule *module, const void *image)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!module || !image)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    size_t n = image_size(image);
    if (n == 0 || n > MAX_IMAGE_BYTES)
        return KVMGPU_CUDA_ERROR_INVALID_IMAGE;
    uint64_t handle;
    rc = kvmgpu_client_module_load(S, image, n, &handle);
    if (rc == 0)
        *module = (CUmodule)(uintptr_t)handle;
    return rc;
}

/* A module from a file (cubin, fatbin or PTX; Triton's launchers load their kernels so): its bytes,
 * NUL-terminated for PTX, loaded as cuModuleLoadData loads them (sent to the host now). */
CUAPI CUresult cuModuleLoad(CUmodule *module, const char *path)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (!module || !path)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    FILE *f = fopen(path, "rb");
    if (!f)
        return KVMGPU_CUDA_ERROR_FILE_NOT_FOUND;
    char *image = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n > 0 && (size_t)n <= MAX_IMAGE_BYTES && fseek(f, 0, SEEK_SET) == 0 && (image = malloc((size_t)n + 1)) != NULL
        && fread(image, 1, (size_t)n, f) == (size_t)n) {
        image[n] = '\0';
        rc = kvmgpu_image_load(module, image);
    } else {
        rc = n > 0 && (size_t)n > MAX_IMAGE_BYTES ? KVMGPU_CUDA_ERROR_INVALID_IMAGE : KVMGPU_CUDA_ERROR_FILE_NOT_FOUND;
    }
    free(image);
    fclose(f);
    return rc;
}

CUAPI CUresult cuModuleLoadFatBinary(CUmodule *module, const void *fatbin)
{
    return cuModuleLoadData(module, fatbin);
}

/* JIT options tune or report on the host's compilation; the host compiles with its own. */
CUAPI CUresult cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int num_options,
                                  CUjit_option *options, void **values)
{
    (void)num_options, (void)options, (void)values;
    return cuModuleLoadData(module, image);
}

CUAPI CUresult cuModuleUnload(CUmodule module)
{
    CUresult rc = kvmgpu_ready();
    return rc ? rc : kvmgpu_module_unload(S, (uint64_t)(uintptr_t)module, 0);
}

static size_t name_length(const char *name)
{
    size_t n = 0;
    while (n <= KVMGPU_MAX_NAME && name[n])
        n++;
    return n;
}

/* A new entry for `handle` at the end of `functions` (room made by the caller), indexed; 0 or
 * OUT_OF_MEMORY (then not added). */
static CUresult index_function_new(uint64_t handle)
{
    functions[nfunctions].handle = handle;
    CUresult rc = index_function(nfunctions);
    if (rc == 0)
        nfunctions++;
    return rc;
}

/* Remember (or update) a function's parameter table. */
static CUresult remember(uint64_t handle, const struct kvmgpu_param *params, uint32_t nparams, const char *name)
{
    struct kvmgpu_param *copy = calloc(nparams ? nparams : 1, sizeof *copy);
    size_t len = strlen(name) + 1;
    char *name_copy = malloc(len);
    if (name_copy)
        memcpy(name_copy, name, len);
    if (!copy || !name_copy) {
        free(copy);
        free(name_copy);
        return KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
    }
    uint32_t argsize = 0;
    for (uint32_t i = 0; i < nparams; i++) {
        copy[i] = params[i];
        if (params[i].offset > KVMGPU_MAX_ARG_BYTES || params[i].size > KVMGPU_MAX_ARG_BYTES - params[i].offset) {
            free(copy);
            free(name_copy);
            return KVMGPU_CUDA_ERROR_INVALID_IMAGE; /* a table no launch could fill */
        }
        if (params[i].offset + params[i].size > argsize)
            argsize = params[i].offset + params[i].size;
    }
    pthread_mutex_lock(&functions_lock);
    struct function *f = lookup(handle);
    if (!f) {
        struct function *grown = kvmgpu_grow(functions, nfunctions, &functions_cap, sizeof *functions);
        if (!grown) {
            pthread_mutex_unlock(&functions_lock);
            free(copy);
            free(name_copy);
            return KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
        }
        functions = grown;
    }
    if (!f) {
        if (index_function_new(handle) != KVMGPU_CUDA_SUCCESS) {
            pthread_mutex_unlock(&functions_lock);
            free(copy);
            free(name_copy);
            return KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
        }
        f = &functions[nfunctions - 1];
    } else {
        free(f->params);
        /* (the old name is not freed: cuFuncGetName's callers may hold it; a handle is looked up
         * again by its own name) */
    }
    *f = (struct function){handle, nparams, argsize, copy, name_copy};
    pthread_mutex_unlock(&functions_lock);
    return KVMGPU_CUDA_SUCCESS;
}

const char *kvmgpu_function_name(uint64_t handle)
{
    const char *name = NULL;
    pthread_mutex_lock(&functions_lock);
    const struct function *f = lookup(handle);
    if (f)
        name = f->name; /* (kept for the process's life, as the driver's) */
    pthread_mutex_unlock(&functions_lock);
    return name;
}

/* Where the kernel's parameter `index` lies in its argument bytes, from the table the host sent
 * (CUDA 12.4's cuFuncGetParamInfo; kvmgpu_guest.driver counts a kernel's parameters with it). */
CUAPI CUresult cuFuncGetParamInfo(CUfunction func, size_t index, size_t *offset, size_t *size)
{
    if (!offset || !size)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    CUresult rc = KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&functions_lock);
    const struct function *f = lookup((uint64_t)(uintptr_t)func);
    if (f && index >= f->nparams) {
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    } else if (f) {
        *offset = f->params[index].offset;
        *size = f->params[index].size;
        rc = KVMGPU_CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&functions_lock);
    return rc;
}

CUAPI CUresult cuModuleGetFunction(CUfunction *function, CUmodule module, const char *name)
{
    CUresult rc = kvmgpu_ready();
    return rc ? rc : kvmgpu_function_get(function, module, name);
}

CUresult kvmgpu_function_get(CUfunction *function, CUmodule module, const char *name)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!function || !name)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    size_t len = name_length(name);
    if (len == 0 || len > KVMGPU_MAX_NAME)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct kvmgpu_results_module_get_function out;
    size_t table_size = KVMGPU_DEFAULT_MAX_FRAME;
    struct kvmgpu_param *table = malloc(table_size);
    if (!table)
        return KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
    rc = kvmgpu_module_get_function(S, (uint64_t)(uintptr_t)module, name, len, &out, table, &table_size);
    if (rc == 0 && (out.nparams > table_size / sizeof *table || table_size % sizeof *table)) {
        kvmgpu_log("the host's parameter table for %s is shorter than its %llu parameters", name,
                   (unsigned long long)out.nparams);
        rc = KVMGPU_CUDA_ERROR_INVALID_IMAGE;
    }
    if (rc == 0)
        rc = remember(out.function, table, (uint32_t)out.nparams, name);
    if (rc == 0)
        *function = (CUfunction)(uintptr_t)out.function;
    free(table);
    return rc;
}

CUAPI CUresult cuModuleGetGlobal_v2(CUdeviceptr *dptr, size_t *bytes, CUmodule module, const char *name)
{
    CUresult rc = kvmgpu_ready();
    return rc ? rc : kvmgpu_global_get(dptr, bytes, module, name);
}

CUresult kvmgpu_global_get(CUdeviceptr *dptr, size_t *bytes, CUmodule module, const char *name)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!name)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    size_t len = name_length(name);
    if (len == 0 || len > KVMGPU_MAX_NAME)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct kvmgpu_results_module_get_global out;
    rc = kvmgpu_module_get_global(S, (uint64_t)(uintptr_t)module, name, len, &out);
    if (rc == 0 && dptr)
        *dptr = out.dptr;
    if (rc == 0 && bytes)
        *bytes = (size_t)out.nbytes;
    return rc;
}

/* --- launches ---------------------------------------------------------------------------------- */

/* The parameter bytes of a launch into `blob` (KVMGPU_MAX_ARG_BYTES): from kernelParams (one
 * pointer a parameter) or from `extra` (CU_LAUNCH_PARAM_BUFFER_POINTER / _SIZE / _END). */
static CUresult pack(uint64_t handle, void **params, void **extra, uint8_t *blob, size_t *size)
{
    CUresult rc = KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&functions_lock);
    const struct function *f = lookup(handle);
    if (!f)
        goto out;
    rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (params) {
        memset(blob, 0, f->argsize);
        for (uint32_t i = 0; i < f->nparams; i++) {
            if (!params[i])
                goto out;
            memcpy(blob + f->params[i].offset, params[i], f->params[i].size);
        }
        *size = f->argsize;
    } else if (extra) {
        void *buffer = NULL;
        size_t *buffer_size = NULL;
        for (int i = 0; extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
            if (i >= 16)
                goto out;
            if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER)
                buffer = extra[i + 1];
            else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE)
                buffer_size = extra[i + 1];
            else
                goto out;
        }
        if (!buffer || !buffer_size || *buffer_size < f->argsize || *buffer_size > KVMGPU_MAX_ARG_BYTES)
            goto out;
        memcpy(blob, buffer, f->argsize); /* (a struct's tail padding is not the kernel's) */
        *size = f->argsize;
    } else if (f->nparams == 0) {
        *size = 0;
    } else {
        goto out;
    }
    rc = KVMGPU_CUDA_SUCCESS;
out:
    pthread_mutex_unlock(&functions_lock);
    return rc;
}

CUAPI CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                              unsigned int by, unsigned int bz, unsigned int shared, CUstream stream,
                              void **params, void **extra)
{
    CUresult rc = kvmgpu_ready();
    if (rc == 0)
        rc = kvmgpu_launch_unclustered(f); /* (nothing to do unless cuLaunchKernelEx gave a kernel clusters) */
    return rc ? rc : kvmgpu_launch_kernel(f, gx, gy, gz, bx, by, bz, shared, stream, params, extra);
}

CUresult kvmgpu_launch_kernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                              unsigned int by, unsigned int bz, unsigned int shared, CUstream stream, void **params,
                              void **extra)
{
    static _Thread_local uint8_t blob[KVMGPU_MAX_ARG_BYTES];
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (params && extra)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    size_t size = 0;
    rc = pack((uint64_t)(uintptr_t)f, params, extra, blob, &size);
    if (rc)
        return rc;
    /* queued: the launch's own error comes with the next synchronising call */
    return kvmgpu_launch(S, (uint64_t)(uintptr_t)f, gx, gy, gz, bx, by, bz, shared, kvmgpu_stream(stream),
                         blob, size, 1);
}

CUAPI CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                   unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared,
                                   CUstream stream, void **params, void **extra)
{
    return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shared, stream, params, extra);
}

/* Whether libraries are loaded when loaded (CUDA_MODULE_LOADING=EAGER) or when first used (the
 * default, as CUDA's since 12.2; library.c). Modules are loaded when asked for either way. */
int kvmgpu_eager_loading(void)
{
    const char *mode = getenv("CUDA_MODULE_LOADING");
    return mode && strcmp(mode, "EAGER") == 0;
}

CUAPI CUresult cuModuleGetLoadingMode(int *mode)
{
    if (!mode)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    *mode = kvmgpu_eager_loading() ? 1 : 2; /* CU_MODULE_EAGER_LOADING, CU_MODULE_LAZY_LOADING */
    return KVMGPU_CUDA_SUCCESS;
}
