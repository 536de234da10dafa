/* Every symbol the driver's libcuda.so.1 exports (driver_symbols.h), so that a library that looks
 * the driver up with dlsym finds each, as on the driver: cuBLASLt does so when it starts, and fails
 * (CUBLAS_STATUS_INTERNAL_ERROR) where a symbol it asks for is missing. Each is a weak stub, which
 * this library's own definition of the name replaces when it is linked; calling a stub logs its
 * name once and is CUDA_ERROR_NOT_SUPPORTED, as a feature a VM is not given; cuGetProcAddress gives
 * the same stub for a driver function it does not forward (procaddr.c). No declaration is seen
 * here: the stubs take no arguments, which the calling convention allows for a function that reads
 * none. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "driver_symbols.h"

void kvmgpu_log(const char *fmt, ...);

#define NOT_SUPPORTED 801 /* CUDA_ERROR_NOT_SUPPORTED */

#define UNFORWARDED(name)                                                                         \
    __attribute__((weak, visibility("default"))) int name(void);                                  \
    __attribute__((weak, visibility("default"))) int name(void)                                   \
    {                                                                                             \
        static atomic_flag said = ATOMIC_FLAG_INIT;                                               \
        if (!atomic_flag_test_and_set(&said))                                                     \
            kvmgpu_log("%s is not forwarded to the vGPU (CUDA_ERROR_NOT_SUPPORTED)", #name);      \
        return NOT_SUPPORTED;                                                                     \
    }

KVMGPU_DRIVER_SYMBOLS(UNFORWARDED)

/* Each symbol's address: its stub, or the library's own definition where it has one. Sorted, as
 * driver_symbols.h is. */
struct symbol {
    const char *name;
    void *fn;
};
#define SYMBOL(name) {#name, (void *)name},
static const struct symbol symbols[] = {KVMGPU_DRIVER_SYMBOLS(SYMBOL)};

static int by_name(const void *key, const void *s)
{
    return strcmp(key, ((const struct symbol *)s)->name);
}

void *kvmgpu_unforwarded(const char *name)
{
    const struct symbol *s = bsearch(name, symbols, sizeof symbols / sizeof symbols[0], sizeof symbols[0], by_name);
    return s ? s->fn : NULL;
}
