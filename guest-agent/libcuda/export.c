/* cuGetExportTable: the driver's private tables that NVIDIA's runtime (cudart, static or shared)
 * asks for by UUID before it does anything else. Their layouts are as ZLUDA's and others' public
 * notes describe them and as CUDA 13's runtime was seen to use them; the code is this library's.
 * A table starts with its size in bytes (all but the context-local storage's), then functions.
 *
 *   CUDART_INTERFACE       modules from the fatbins the runtime registers; the primary context
 *   TOOLS_RUNTIME_HOOKS    two buffers the runtime's tools callbacks write into
 *   TOOLS_TLS              the calling thread's current context: slot 1 sets it, slot 2 reads it
 *                          (cuBLASLt 13 reads it before a matmul's heuristics; what the H100's
 *                          driver does, read from its code: docs/guest.md)
 *   CONTEXT_LOCAL_STORAGE  a value per (context, key), with a destructor run when the context is
 *                          destroyed or the primary context reset
 *   CONTEXT_CHECKS         "is this context usable": always yes
 *   INTEGRITY_CHECK        the value the runtime checks the driver with (integrity.c)
 *
 * A slot nobody has seen called logs its table and number once, and is CUDA_ERROR_NOT_SUPPORTED;
 * a table this library does not know logs its UUID once and is CUDA_ERROR_NOT_SUPPORTED. */
#define _GNU_SOURCE
#include "export.h"

#include <pthread.h>
#include <sys/uio.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum table { RUNTIME, TOOLS_HOOKS, TOOLS_TLS, STORAGE, CHECKS, INTEGRITY, TOOLS_CONTEXT, TABLE_1734, TABLE_DA91, NTABLES };
static const char *const TABLE_NAME[NTABLES] = {"CUDART_INTERFACE", "TOOLS_RUNTIME_CALLBACK_HOOKS", "TOOLS_TLS",
                                                "CONTEXT_LOCAL_STORAGE", "CONTEXT_CHECKS", "INTEGRITY_CHECK", "TOOLS_CONTEXT", "1734dc26", "da9151d3"};

/* --- slots nobody has seen called --------------------------------------------------------------- */

static pthread_mutex_t said_lock = PTHREAD_MUTEX_INITIALIZER;
#define MAX_SLOTS 96
static unsigned char said_slots[NTABLES][MAX_SLOTS]; /* slot s was logged */

/* With KVMGPU_LOG=trace, the 32 bytes at `p` where they can be read (process_vm_readv: an argument
 * that is no pointer fails, it does not fault). */
static void trace_bytes(const char *what, const void *p)
{
    unsigned char b[32];
    struct iovec here = {b, sizeof b}, there = {(void *)p, sizeof b};
    if (!kvmgpu_tracing() || process_vm_readv(getpid(), &here, 1, &there, 1, 0) != (ssize_t)sizeof b)
        return;
    char hex[sizeof b * 2 + 1];
    for (size_t i = 0; i < sizeof b; i++)
        snprintf(hex + 2 * i, 3, "%02x", b[i]);
    kvmgpu_log("  %s %p: %s", what, p, hex);
}

/* A slot nobody has seen called: logged once, with the arguments it was given (their first four
 * registers; what they point at with KVMGPU_LOG=trace), for whoever finds out what it does. */
static CUresult unprovided(enum table t, int slot, void *a, void *b, void *c, void *d)
{
    pthread_mutex_lock(&said_lock);
    int first = !said_slots[t][slot];
    said_slots[t][slot] = 1;
    pthread_mutex_unlock(&said_lock);
    if (first) {
        kvmgpu_log("cuGetExportTable: %s slot %d is not provided (CUDA_ERROR_NOT_SUPPORTED); called with "
                   "(%p, %p, %p, %p)", TABLE_NAME[t], slot, a, b, c, d);
        trace_bytes("arg 1 at", a);
        trace_bytes("arg 2 at", b);
        trace_bytes("arg 3 at", c);
        trace_bytes("arg 4 at", d);
    }
    return KVMGPU_CUDA_ERROR_NOT_SUPPORTED;
}

#define UNPROVIDED(t, s)                                                  \
    static CUresult t##_##s(void *a, void *b, void *c, void *d)         \
    {                                                                     \
        return unprovided(t, s, a, b, c, d);                              \
    }
UNPROVIDED(RUNTIME, 3)
UNPROVIDED(RUNTIME, 4)
UNPROVIDED(RUNTIME, 5)
UNPROVIDED(RUNTIME, 9)
UNPROVIDED(RUNTIME, 10)
UNPROVIDED(RUNTIME, 11)
UNPROVIDED(RUNTIME, 12)
UNPROVIDED(TOOLS_HOOKS, 1)
UNPROVIDED(TOOLS_HOOKS, 3)
UNPROVIDED(TOOLS_HOOKS, 4)
UNPROVIDED(TOOLS_HOOKS, 5)
UNPROVIDED(STORAGE, 3)
/* TOOLS_CONTEXT (21318c60-...; "CU_ETID_ToolsContext" in public notes): cuBLASLt 13 asks for it
 * before a matmul's heuristics. 94 slots, as public notes count a CUDA 13 driver's (the H100's
 * 580 driver has 92); those not provided are logged with their arguments when first called. */
#define UNPROVIDED_10(t, d)                                                                              \
    UNPROVIDED(t, d##0) UNPROVIDED(t, d##1) UNPROVIDED(t, d##2) UNPROVIDED(t, d##3) UNPROVIDED(t, d##4) \
    UNPROVIDED(t, d##5) UNPROVIDED(t, d##6) UNPROVIDED(t, d##7) UNPROVIDED(t, d##8) UNPROVIDED(t, d##9)
UNPROVIDED(TOOLS_CONTEXT, 1) UNPROVIDED(TOOLS_CONTEXT, 2) UNPROVIDED(TOOLS_CONTEXT, 3)
UNPROVIDED(TOOLS_CONTEXT, 5) UNPROVIDED(TOOLS_CONTEXT, 6) UNPROVIDED(TOOLS_CONTEXT, 7) UNPROVIDED(TOOLS_CONTEXT, 8)
UNPROVIDED(TOOLS_CONTEXT, 9)
UNPROVIDED_10(TOOLS_CONTEXT, 1) UNPROVIDED_10(TOOLS_CONTEXT, 2) UNPROVIDED_10(TOOLS_CONTEXT, 3)
UNPROVIDED_10(TOOLS_CONTEXT, 4) UNPROVIDED_10(TOOLS_CONTEXT, 5) UNPROVIDED_10(TOOLS_CONTEXT, 6)
UNPROVIDED_10(TOOLS_CONTEXT, 7) UNPROVIDED_10(TOOLS_CONTEXT, 8)
UNPROVIDED(TOOLS_CONTEXT, 90) UNPROVIDED(TOOLS_CONTEXT, 91) UNPROVIDED(TOOLS_CONTEXT, 92) UNPROVIDED(TOOLS_CONTEXT, 93)
UNPROVIDED(TOOLS_CONTEXT, 94)
/* Two more tables, not known yet: 1734dc26-... (cuBLASLt 13's bf16 GEMMs: without it PyTorch's
 * bf16 matmul crashed; with it, its slot 4 answered NOT_SUPPORTED, the GEMM runs and equals the
 * native one on the H100) and da9151d3-... (CuPy, handing it LLVM bitcode), at the sizes the H100's
 * driver gives them. Every slot is logged with its arguments when first called. */
UNPROVIDED(TABLE_1734, 1) UNPROVIDED(TABLE_1734, 2) UNPROVIDED(TABLE_1734, 3) UNPROVIDED(TABLE_1734, 4)
UNPROVIDED(TABLE_1734, 5) UNPROVIDED(TABLE_1734, 6) UNPROVIDED(TABLE_1734, 7) UNPROVIDED(TABLE_1734, 8)
UNPROVIDED(TABLE_1734, 9) UNPROVIDED(TABLE_1734, 10) UNPROVIDED(TABLE_1734, 11) UNPROVIDED(TABLE_1734, 12)
UNPROVIDED(TABLE_1734, 13) UNPROVIDED(TABLE_1734, 14) UNPROVIDED(TABLE_1734, 15) UNPROVIDED(TABLE_1734, 16)
UNPROVIDED(TABLE_DA91, 1) UNPROVIDED(TABLE_DA91, 2) UNPROVIDED(TABLE_DA91, 3) UNPROVIDED(TABLE_DA91, 4)
UNPROVIDED(TABLE_DA91, 5) UNPROVIDED(TABLE_DA91, 6)
UNPROVIDED(CHECKS, 1)
UNPROVIDED(INTEGRITY, 2)

#define TRACE(...)                     \
    do {                               \
        if (kvmgpu_tracing())          \
            kvmgpu_log(__VA_ARGS__);   \
    } while (0)

/* --- CUDART_INTERFACE -------------------------------------------------------------------------- */

struct fatbin_wrapper { /* what the runtime's __cudaRegisterFatBinary is given by nvcc's code */
    uint32_t magic; /* 0x466243B1 */
    uint32_t version;
    const void *fatbin;
    const void *more; /* (file names or further fatbins: not read) */
};
#define WRAPPER_MAGIC 0x466243B1u

static CUresult module_from_wrapper(CUmodule *module, const struct fatbin_wrapper *w)
{
    if (!module || !w)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (w->magic != WRAPPER_MAGIC || !w->fatbin) {
        kvmgpu_log("the runtime registered a fatbin wrapper with magic 0x%08x (not 0x%08x): not loaded", w->magic,
                   WRAPPER_MAGIC);
        return KVMGPU_CUDA_ERROR_INVALID_IMAGE;
    }
    return kvmgpu_fatbin_load(module, w->fatbin);
}

static CUresult runtime_module(CUmodule *module, const struct fatbin_wrapper *wrapper)
{
    TRACE("CUDART_INTERFACE.module(%p)", (const void *)wrapper);
    return module_from_wrapper(module, wrapper);
}

static CUresult runtime_primary_context(CUcontext *pctx, CUdevice dev)
{
    TRACE("CUDART_INTERFACE.primary_context(%d)", dev);
    if (!pctx)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (dev != 0)
        return KVMGPU_CUDA_ERROR_INVALID_DEVICE;
    *pctx = kvmgpu_primary_context();
    return KVMGPU_CUDA_SUCCESS;
}

/* (ext1/ext2: with extra arguments nobody has seen other than NULL, NULL, 0) */
static CUresult runtime_module_ext1(CUmodule *module, const struct fatbin_wrapper *wrapper, void *a3, void *a4,
                                    unsigned a5)
{
    TRACE("CUDART_INTERFACE.module_ext1(%p, %p, %p, %u)", (const void *)wrapper, a3, a4, a5);
    return module_from_wrapper(module, wrapper);
}

static CUresult runtime_slot7(size_t arg)
{
    TRACE("CUDART_INTERFACE.slot7(%zu)", arg);
    return KVMGPU_CUDA_SUCCESS;
}

static CUresult runtime_module_ext2(const void *fatbin, CUmodule *module, void *a3, void *a4, unsigned a5)
{
    TRACE("CUDART_INTERFACE.module_ext2(%p, %p, %p, %u)", fatbin, a3, a4, a5);
    if (!module || !fatbin)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    return kvmgpu_fatbin_load(module, fatbin);
}

#define SIZE_OF(table) ((const void *)(uintptr_t)sizeof(table))

static const void *runtime_table[13];
static const void *runtime_table[13] = {
    SIZE_OF(runtime_table), (const void *)runtime_module, (const void *)runtime_primary_context,
    (const void *)RUNTIME_3, (const void *)RUNTIME_4, (const void *)RUNTIME_5, (const void *)runtime_module_ext1,
    (const void *)runtime_slot7, (const void *)runtime_module_ext2, (const void *)RUNTIME_9,
    (const void *)RUNTIME_10, (const void *)RUNTIME_11, (const void *)RUNTIME_12,
};

/* --- TOOLS_RUNTIME_CALLBACK_HOOKS, TOOLS_TLS --------------------------------------------------- */

static uint32_t hooks_buffer1[1024];
static uint32_t hooks_buffer2[14];

static void hooks_buffer_1(void **p, size_t *size)
{
    TRACE("TOOLS_RUNTIME_CALLBACK_HOOKS.buffer1");
    if (p)
        *p = hooks_buffer1;
    if (size)
        *size = sizeof hooks_buffer1;
}

static void hooks_buffer_2(void **p, size_t *size)
{
    TRACE("TOOLS_RUNTIME_CALLBACK_HOOKS.buffer2");
    if (p)
        *p = hooks_buffer2;
    if (size)
        *size = sizeof hooks_buffer2;
}

static const void *hooks_table[7];
static const void *hooks_table[7] = {
    SIZE_OF(hooks_table), (const void *)TOOLS_HOOKS_1, (const void *)hooks_buffer_1, (const void *)TOOLS_HOOKS_3,
    (const void *)TOOLS_HOOKS_4, (const void *)TOOLS_HOOKS_5, (const void *)hooks_buffer_2,
};

/* The driver's two slots (three entries with the size, as its table has): set and get the calling
 * thread's current context, as cuCtxSetCurrent and cuCtxGetCurrent (NULL where none is current). */
static CUresult tools_tls_set(CUcontext ctx)
{
    TRACE("TOOLS_TLS.set(%p)", (void *)ctx);
    return cuCtxSetCurrent(ctx);
}

static CUresult tools_tls_get(CUcontext *ctx)
{
    if (!ctx)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    CUresult rc = cuCtxGetCurrent(ctx);
    TRACE("TOOLS_TLS.get: %p (%d)", (void *)*ctx, rc);
    return rc;
}

static const void *tls_table[3];
static const void *tls_table[3] = {SIZE_OF(tls_table), (const void *)tools_tls_set, (const void *)tools_tls_get};

/* --- CONTEXT_LOCAL_STORAGE --------------------------------------------------------------------- */

typedef void (*storage_dtor)(CUcontext ctx, void *key, void *value);
struct stored {
    CUcontext ctx;
    void *key, *value;
    storage_dtor dtor;
    struct stored *next;
};
static pthread_mutex_t storage_lock = PTHREAD_MUTEX_INITIALIZER;
static struct stored *storage;

/* The context named, or the current one (the storage is the guest's: no channel is needed). */
static CUresult storage_context(CUcontext *ctx)
{
    CUresult rc = *ctx ? KVMGPU_CUDA_SUCCESS : cuCtxGetCurrent(ctx);
    return rc == 0 && !*ctx ? KVMGPU_CUDA_ERROR_INVALID_CONTEXT : rc;
}

static CUresult storage_put(CUcontext ctx, void *key, void *value, storage_dtor dtor)
{
    CUresult rc = storage_context(&ctx);
    TRACE("CONTEXT_LOCAL_STORAGE.put(%p, %p, %p) %d", (void *)ctx, key, value, rc);
    if (rc)
        return rc;
    pthread_mutex_lock(&storage_lock);
    struct stored *s = storage;
    while (s && (s->ctx != ctx || s->key != key))
        s = s->next;
    if (!s && (s = calloc(1, sizeof *s)) != NULL) {
        s->next = storage;
        storage = s;
    }
    if (s)
        *s = (struct stored){ctx, key, value, dtor, s->next};
    pthread_mutex_unlock(&storage_lock);
    return s ? KVMGPU_CUDA_SUCCESS : KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
}

static CUresult storage_delete(CUcontext ctx, void *key)
{
    CUresult rc = storage_context(&ctx);
    TRACE("CONTEXT_LOCAL_STORAGE.delete(%p, %p) %d", (void *)ctx, key, rc);
    if (rc)
        return rc;
    pthread_mutex_lock(&storage_lock);
    for (struct stored **p = &storage; *p; p = &(*p)->next) {
        if ((*p)->ctx == ctx && (*p)->key == key) {
            struct stored *gone = *p;
            *p = gone->next;
            free(gone);
            break;
        }
    }
    pthread_mutex_unlock(&storage_lock);
    return KVMGPU_CUDA_SUCCESS;
}

static CUresult storage_get(void **value, CUcontext ctx, void *key)
{
    if (!value)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    CUresult rc = storage_context(&ctx);
    if (rc == 0) {
        rc = KVMGPU_CUDA_ERROR_INVALID_HANDLE; /* (what the runtime takes for "nothing stored yet") */
        pthread_mutex_lock(&storage_lock);
        for (struct stored *s = storage; s; s = s->next) {
            if (s->ctx == ctx && s->key == key) {
                *value = s->value;
                rc = KVMGPU_CUDA_SUCCESS;
                break;
            }
        }
        pthread_mutex_unlock(&storage_lock);
    }
    TRACE("CONTEXT_LOCAL_STORAGE.get(%p, %p) %d", (void *)ctx, key, rc);
    return rc;
}

void kvmgpu_context_storage_release(CUcontext ctx)
{
    pthread_mutex_lock(&storage_lock);
    struct stored *gone = NULL;
    for (struct stored **p = &storage; *p;) {
        if (!ctx || (*p)->ctx == ctx) {
            struct stored *s = *p;
            *p = s->next;
            s->next = gone;
            gone = s;
        } else {
            p = &(*p)->next;
        }
    }
    pthread_mutex_unlock(&storage_lock);
    while (gone) { /* outside the lock: a destructor may call the driver */
        struct stored *s = gone;
        gone = s->next;
        TRACE("CONTEXT_LOCAL_STORAGE destructor (%p, %p)", (void *)s->ctx, s->key);
        if (s->dtor)
            s->dtor(s->ctx, s->key, s->value);
        free(s);
    }
}

static const void *storage_table[4] = {
    (const void *)storage_put, (const void *)storage_delete, (const void *)storage_get, (const void *)STORAGE_3,
};

/* --- CONTEXT_CHECKS ---------------------------------------------------------------------------- */

static CUresult checks_context(CUcontext ctx, uint32_t *verdict, const void **detail)
{
    TRACE("CONTEXT_CHECKS.context(%p)", (void *)ctx);
    (void)detail;
    if (verdict)
        *verdict = 0;
    return KVMGPU_CUDA_SUCCESS;
}

static uint32_t checks_slot3(void)
{
    TRACE("CONTEXT_CHECKS.slot3");
    return 0;
}

static const void *checks_table[4];
static const void *checks_table[4] = {
    SIZE_OF(checks_table), (const void *)CHECKS_1, (const void *)checks_context, (const void *)checks_slot3,
};

/* --- INTEGRITY_CHECK --------------------------------------------------------------------------- */

static const void *integrity_table[3];

static CUresult integrity_check(uint32_t version, uint64_t unix_seconds, uint64_t result[2])
{
    if (!result)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct kvmgpu_integrity_env env = {0};
    CUresult rc = cuDriverGetVersion(&env.driver_version);
    if (rc == 0)
        rc = cuDeviceGetUuid((CUuuid *)env.uuid, 0);
    if (rc == 0)
        rc = cuDeviceGetAttribute(&env.pci_domain, 50 /* PCI_DOMAIN_ID */, 0);
    if (rc == 0)
        rc = cuDeviceGetAttribute(&env.pci_bus, 33 /* PCI_BUS_ID */, 0);
    if (rc == 0)
        rc = cuDeviceGetAttribute(&env.pci_device, 34 /* PCI_DEVICE_ID */, 0);
    if (rc)
        return rc;
    env.runtime_table = runtime_table;
    env.check_table = integrity_table;
    env.check_fn = integrity_table[1];
    kvmgpu_integrity_value(version, unix_seconds, &env, result);
    TRACE("INTEGRITY_CHECK.check(%u, %llu) = %016llx%016llx", version, (unsigned long long)unix_seconds,
          (unsigned long long)result[0], (unsigned long long)result[1]);
    return KVMGPU_CUDA_SUCCESS;
}

static const void *integrity_table[3] = {
    SIZE_OF(integrity_table), (const void *)integrity_check, (const void *)INTEGRITY_2,
};

/* TOOLS_CONTEXT slot 4, as the H100's driver does it (read from its code): `*out` is the u32 at
 * byte 56 of the caller's descriptor `desc` where the descriptor's kind (its first u32) is 0 or 1,
 * else 0; CUDA_ERROR_UNKNOWN without `out`. It reads nothing but what the caller gave it. */
static CUresult TOOLS_CONTEXT_4(const void *desc, uint64_t *out)
{
    if (!out)
        return KVMGPU_CUDA_ERROR_UNKNOWN;
    *out = 0;
    uint32_t kind = 0, value = 0;
    if (desc)
        memcpy(&kind, desc, sizeof kind);
    if (desc && kind <= 1) {
        memcpy(&value, (const char *)desc + 56, sizeof value);
        *out = value;
    }
    TRACE("TOOLS_CONTEXT.4(%p): kind %u, %llu", desc, kind, (unsigned long long)*out);
    return KVMGPU_CUDA_SUCCESS;
}

#define SLOTS_10(t, d)                                                                                          \
    (const void *)t##_##d##0, (const void *)t##_##d##1, (const void *)t##_##d##2, (const void *)t##_##d##3,     \
        (const void *)t##_##d##4, (const void *)t##_##d##5, (const void *)t##_##d##6, (const void *)t##_##d##7, \
        (const void *)t##_##d##8, (const void *)t##_##d##9
static const void *tools_context_table[95];
static const void *tools_context_table[95] = {
    SIZE_OF(tools_context_table), (const void *)TOOLS_CONTEXT_1, (const void *)TOOLS_CONTEXT_2,
    (const void *)TOOLS_CONTEXT_3, (const void *)TOOLS_CONTEXT_4, (const void *)TOOLS_CONTEXT_5,
    (const void *)TOOLS_CONTEXT_6, (const void *)TOOLS_CONTEXT_7, (const void *)TOOLS_CONTEXT_8,
    (const void *)TOOLS_CONTEXT_9, SLOTS_10(TOOLS_CONTEXT, 1), SLOTS_10(TOOLS_CONTEXT, 2),
    SLOTS_10(TOOLS_CONTEXT, 3), SLOTS_10(TOOLS_CONTEXT, 4), SLOTS_10(TOOLS_CONTEXT, 5),
    SLOTS_10(TOOLS_CONTEXT, 6), SLOTS_10(TOOLS_CONTEXT, 7), SLOTS_10(TOOLS_CONTEXT, 8),
    (const void *)TOOLS_CONTEXT_90, (const void *)TOOLS_CONTEXT_91, (const void *)TOOLS_CONTEXT_92,
    (const void *)TOOLS_CONTEXT_93, (const void *)TOOLS_CONTEXT_94,
};

/* (their sizes as the H100's 580 driver gives them: 16 and 6 slots) */
#define SLOTS_1_TO_6(t) \
    (const void *)t##_1, (const void *)t##_2, (const void *)t##_3, (const void *)t##_4, (const void *)t##_5, \
        (const void *)t##_6
static const void *table_1734[17];
static const void *table_1734[17] = {
    SIZE_OF(table_1734), SLOTS_1_TO_6(TABLE_1734), (const void *)TABLE_1734_7, (const void *)TABLE_1734_8,
    (const void *)TABLE_1734_9, (const void *)TABLE_1734_10, (const void *)TABLE_1734_11, (const void *)TABLE_1734_12,
    (const void *)TABLE_1734_13, (const void *)TABLE_1734_14, (const void *)TABLE_1734_15, (const void *)TABLE_1734_16,
};
static const void *table_da91[7];
static const void *table_da91[7] = {SIZE_OF(table_da91), SLOTS_1_TO_6(TABLE_DA91)};

/* --- the lookup -------------------------------------------------------------------------------- */

struct known {
    uint8_t uuid[16];
    const void *table; /* NULL: known, and refused without a word (nothing is lost without it) */
};

static const struct known KNOWN[] = {
    {{0x6b, 0xd5, 0xfb, 0x6c, 0x5b, 0xf4, 0xe7, 0x4a, 0x89, 0x87, 0xd9, 0x39, 0x12, 0xfd, 0x9d, 0xf9}, runtime_table},
    {{0xa0, 0x94, 0x79, 0x8c, 0x2e, 0x74, 0x2e, 0x74, 0x93, 0xf2, 0x08, 0x00, 0x20, 0x0c, 0x0a, 0x66}, hooks_table},
    {{0x42, 0xd8, 0x5a, 0x81, 0x23, 0xf6, 0xcb, 0x47, 0x82, 0x98, 0xf6, 0xe7, 0x8a, 0x3a, 0xec, 0xdc}, tls_table},
    {{0xc6, 0x93, 0x33, 0x6e, 0x11, 0x21, 0xdf, 0x11, 0xa8, 0xc3, 0x68, 0xf3, 0x55, 0xd8, 0x95, 0x93}, storage_table},
    {{0x26, 0x3e, 0x88, 0x60, 0x7c, 0xd2, 0x61, 0x43, 0x92, 0xf6, 0xbb, 0xd5, 0x00, 0x6d, 0xfa, 0x7e}, checks_table},
    {{0xd4, 0x08, 0x20, 0x55, 0xbd, 0xe6, 0x70, 0x4b, 0x8d, 0x34, 0xba, 0x12, 0x3c, 0x66, 0xe1, 0xf2},
     integrity_table},
    {{0x21, 0x31, 0x8c, 0x60, 0x97, 0x14, 0x32, 0x48, 0x8c, 0xa6, 0x41, 0xff, 0x73, 0x24, 0xc8, 0xf2},
     tools_context_table},
    {{0x17, 0x34, 0xdc, 0x26, 0x80, 0x0d, 0x47, 0x45, 0x87, 0x26, 0xc0, 0xf1, 0xe7, 0xdd, 0x8b, 0xca}, table_1734},
    {{0xda, 0x91, 0x51, 0xd3, 0x3a, 0xe6, 0xcc, 0x41, 0xa5, 0xc0, 0x4f, 0x26, 0xd5, 0x33, 0xe3, 0x28}, table_da91},
    /* asked for before cuInit; the runtime goes on without it */
    {{0xf8, 0xcf, 0xf9, 0x51, 0x21, 0x46, 0x8b, 0x4e, 0xb9, 0xe2, 0xfb, 0x46, 0x9e, 0x7c, 0x0d, 0xd9}, NULL},
};

#define UNKNOWN_MAX 64
static uint8_t said_tables[UNKNOWN_MAX][16];
static int nsaid_tables;

static void log_unknown_table(const uint8_t *u)
{
    pthread_mutex_lock(&said_lock);
    int seen = 0;
    for (int i = 0; i < nsaid_tables && !seen; i++)
        seen = !memcmp(said_tables[i], u, 16);
    if (!seen && nsaid_tables < UNKNOWN_MAX)
        memcpy(said_tables[nsaid_tables++], u, 16);
    pthread_mutex_unlock(&said_lock);
    if (!seen)
        kvmgpu_log("cuGetExportTable: table %02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x is "
                   "not provided (CUDA_ERROR_NOT_SUPPORTED)",
                   u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

CUAPI CUresult cuGetExportTable(const void **table, const CUuuid *id)
{
    if (!table || !id)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    const uint8_t *u = (const uint8_t *)id->bytes;
    for (size_t i = 0; i < sizeof KNOWN / sizeof KNOWN[0]; i++) {
        if (memcmp(KNOWN[i].uuid, u, 16) == 0) {
            TRACE("cuGetExportTable(%02x%02x%02x%02x-...): %s", u[0], u[1], u[2], u[3],
                  KNOWN[i].table ? "provided" : "refused");
            *table = KNOWN[i].table;
            return KNOWN[i].table ? KVMGPU_CUDA_SUCCESS : KVMGPU_CUDA_ERROR_NOT_SUPPORTED;
        }
    }
    *table = NULL;
    log_unknown_table(u);
    return KVMGPU_CUDA_ERROR_NOT_SUPPORTED;
}
