/* One process's session with its vGPU worker: the channel (a unix socket in loopback, the guest
 * agent's socket, or the VM's virtio-serial port), the shared region mapped, the HELLO / WELCOME
 * handshake, and calls (`kvmgpu_call`, kvmgpu_calls.h's stubs call it). */
#ifndef KVMGPU_CLIENT_H
#define KVMGPU_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "kvmgpu_calls.h"
#include "kvmgpu_cuda.h"

#define KVMGPU_CLIENT_ERR 512
#define KVMGPU_MAX_PINNED 256 /* page-locked blocks carved out of a session's window */

/* The device as the WELCOME describes it (cached for the device queries). */
struct kvmgpu_device {
    char name[256];
    uint8_t uuid[16];
    char uuid_text[96]; /* as the WELCOME gives it ("GPU-..."), what NVML reports */
    uint64_t total_memory; /* the vGPU's memory quota */
    int driver_version;
    int cc_major, cc_minor;
    int attribute[KVMGPU_CU_DEVICE_ATTRIBUTE_MAX];
    uint8_t has_attribute[KVMGPU_CU_DEVICE_ATTRIBUTE_MAX];
};

struct kvmgpu_client {
    pthread_mutex_t lock; /* recursive: callers hold it across a sequence of calls (a copy) */
    int fd;
    int is_socket;
    int shared; /* the region is the guest agent's: other processes have windows in it */
    int monitor; /* a session that only asks about the vGPU: no window (window_size 0) */
    uint8_t *region;
    size_t region_size;
    uint8_t *window; /* the session's part of the region */
    uint64_t window_size;
    uint64_t ring_size; /* [0, ring_size) of the window carries bulk bytes; a mailbox may follow */
    uint32_t session;
    uint32_t seq;
    uint32_t max_frame;
    atomic_int dead; /* the channel is gone: every call fails (read without the lock) */
    uint8_t *frame; /* max_frame + header bytes: a reply being read */
    /* Calls on their way: queued calls wait here, in whole frames, until a call needs an answer or
     * they pass batch_limit (batch_limit starts at first_batch after each reply and doubles up to
     * batch_bytes: an idle GPU gets the first work soon). */
    uint8_t *batch;
    size_t batch_len, batch_cap, batch_limit, batch_bytes, first_batch;
    int clean; /* nothing went on the channel since the last reply: a call may be posted */
    /* The mailbox at the window's end (kvmgpu_wire/mailbox.py; NULL: none or KVMGPU_MAILBOX=0). */
    volatile uint32_t *box;
    uint32_t box_number;
    int want_box; /* KVMGPU_MAILBOX */
    unsigned poll_us; /* spin this long for an answer before blocking */
    /* Bulk copies: in chunks of pipe_min to pipe_chunk bytes, each copied into or out of the window
     * by the copier (kvmgpu_copier.h) in copy_split-byte pieces where `copier`. */
    size_t pipe_min, pipe_chunk, copy_split;
    int copier;
    /* Page-locked memory carved out of the ring's top (kvmgpu_client_pin): the ring is
     * [0, ring_size), ring_size the lowest block's offset (ring_end where there is none). */
    uint64_t ring_end;
    struct kvmgpu_pinned { uint64_t offset, size; } pins[KVMGPU_MAX_PINNED]; /* highest first */
    int npins;
    struct kvmgpu_device device;
    char last_error[KVMGPU_MAX_ERROR_TEXT + 1]; /* the host's text of its last failed reply */
};

/* Who opens a session: the library's name in the HELLO's `client`, its `role` ("": CUDA calls;
 * "monitor": only questions about the vGPU, left out of the VM's process list), and the window
 * it asks for (0: KVMGPU_WINDOW, else all that is free, through the agent a sixteenth). */
struct kvmgpu_client_kind {
    const char *library;
    const char *role;
    uint64_t window;
};

/* Find the channel (KVMGPU_SOCKET + KVMGPU_SHM; the guest agent's socket; the VM's devices), map
 * the region, say HELLO and read the WELCOME. `kind` NULL: libcuda's. 0, or -1 with what went
 * wrong in `err`. */
int kvmgpu_client_open(struct kvmgpu_client *c, const struct kvmgpu_client_kind *kind, char *err, size_t errlen);
/* Say GOODBYE (when the channel still works) and let go of the channel and the region. */
void kvmgpu_client_close(struct kvmgpu_client *c, const char *reason);

void kvmgpu_client_lock(struct kvmgpu_client *c);
void kvmgpu_client_unlock(struct kvmgpu_client *c);

/* Copies through the window's bulk part, in pieces of its size; a CUresult. `stream` 0: the
 * null stream. Each piece's call waits for the host's reply (the window is then free again). */
int kvmgpu_client_htod(struct kvmgpu_client *c, uint64_t dst, const void *src, size_t n, uint64_t stream);
int kvmgpu_client_dtoh(struct kvmgpu_client *c, void *dst, uint64_t src, size_t n, uint64_t stream);
/* Page-locked memory in the window (the host has it registered: the GPU reads and writes it
 * directly, and a copy from or to it moves no byte in the guest): `n` bytes rounded to pages, or
 * NULL where the window cannot spare them (it keeps at least half of the ring for bulk copies). */
void *kvmgpu_client_pin(struct kvmgpu_client *c, size_t n);
/* Give back a block kvmgpu_client_pin gave; -1 where `p` is not one. */
int kvmgpu_client_unpin(struct kvmgpu_client *c, void *p);
/* A module image into the window (the host has not seen its digest yet), then loaded. */
int kvmgpu_client_module_load(struct kvmgpu_client *c, const void *image, size_t n, uint64_t *module);

/* stderr, prefixed "kvmgpu: ", unless KVMGPU_LOG is 0 / off / quiet. */
void kvmgpu_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* KVMGPU_LOG=trace: every cuGetProcAddress name, export table slot and module image is logged. */
int kvmgpu_tracing(void);

#endif
