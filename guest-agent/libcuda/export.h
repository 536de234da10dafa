/* What NVIDIA's runtime (cudart) needs beyond the documented driver API: cuGetExportTable's
 * tables (export.c), the integrity check they include (integrity.c), and the fatbins the runtime
 * registers (fatbin.c). */
#ifndef KVMGPU_EXPORT_H
#define KVMGPU_EXPORT_H

#include "api.h"

/* What the integrity check hashes besides its two arguments. */
struct kvmgpu_integrity_env {
    int driver_version;
    const void *runtime_table, *check_table, *check_fn;
    uint8_t uuid[16];
    int pci_domain, pci_bus, pci_device;
};

/* The integrity value the runtime expects for (version, unix_seconds); 0. */
int kvmgpu_integrity_value(uint32_t version, uint64_t unix_seconds, const struct kvmgpu_integrity_env *env,
                           uint64_t result[2]);
/* RFC 1319's MD2 (the integrity check's hash; exported to the tests through nothing but this). */
void kvmgpu_md2(const void *data, size_t n, uint8_t digest[16]);

/* Run and forget the context-local storage destructors of `ctx` (NULL: of every context), as the
 * driver does when a context is destroyed or the primary context reset. */
void kvmgpu_context_storage_release(CUcontext ctx);

/* The primary context, made active, without a reference taken (the runtime's own way in). */
CUcontext kvmgpu_primary_context(void);

/* A module from a fatbin the runtime hands over (its header: magic 0xBA55ED50, version u16,
 * header size u16, files' size u64), sent to the host once per content hash. */
CUresult kvmgpu_fatbin_load(CUmodule *module, const void *fatbin);
/* CUDA_MODULE_LOADING=EAGER: libraries go to the host when loaded, not when first used. */
int kvmgpu_eager_loading(void);

/* cuModuleLoadData, cuModuleGetFunction, cuModuleGetGlobal with no current context needed (the
 * worker's one context is every context): for libraries, which belong to no context. */
CUresult kvmgpu_image_load(CUmodule *module, const void *image);
CUresult kvmgpu_function_get(CUfunction *function, CUmodule module, const char *name);
CUresult kvmgpu_global_get(CUdeviceptr *dptr, size_t *bytes, CUmodule module, const char *name);

#endif
