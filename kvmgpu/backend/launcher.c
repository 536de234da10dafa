/* kvmgpu: the worker's launch loop, the one piece of the host written in C.
 *
 * It launches kernels the worker has already validated in Python (function and stream handles
 * from the VM's own tables, grid and block against the device's limits, the argument size
 * against the function's parameter table): it never reads a byte from the guest other than
 * the argument bytes it hands to the driver, whose size the worker checked. Each record is one
 * cuLaunchKernel with the arguments as one packed buffer (CU_LAUNCH_PARAM_BUFFER_POINTER), as
 * the cuda backend's Python launch path does. Why it exists: on the H200 a cuLaunchKernel costs
 * ~4.4 us called from C and ~5.9 us through cuda-bindings; the worker pays the difference on
 * every forwarded launch (docs/performance.md).
 *
 * No headers: the driver's function comes in as a pointer (cuGetProcAddress in launcher.py), so
 * this builds with a bare C compiler and links nothing.
 */

typedef int (*cu_launch_kernel_fn)(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                   unsigned by, unsigned bz, unsigned shared, void *stream,
                                   void **kernel_params, void **extra);

/* One launch: 64 bytes, packed by launcher.py's RECORD ("=4Q8I"). */
struct launch_record {
    unsigned long long function;  /* CUfunction */
    unsigned long long stream;    /* CUstream; 0: the legacy null stream */
    unsigned long long params;    /* address of the argument bytes */
    unsigned long long size;      /* their length: exactly the function's argument size */
    unsigned int grid[3], block[3], shared, pad;
};

#define CU_LAUNCH_PARAM_END ((void *)0x00)
#define CU_LAUNCH_PARAM_BUFFER_POINTER ((void *)0x01)
#define CU_LAUNCH_PARAM_BUFFER_SIZE ((void *)0x02)

/* Launch records[0..count) in order, stopping at the first launch the driver refuses.
 * Returns how many were launched; *error is that launch's CUresult, 0 when all went. */
int kvmgpu_launch_records(void *launch_fn, const struct launch_record *records, int count,
                          int *error)
{
    cu_launch_kernel_fn launch = (cu_launch_kernel_fn)launch_fn;
    for (int i = 0; i < count; i++) {
        const struct launch_record *r = &records[i];
        unsigned long long size = r->size;
        void *extra[5] = {CU_LAUNCH_PARAM_BUFFER_POINTER, (void *)r->params,
                          CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END};
        int err = launch((void *)r->function, r->grid[0], r->grid[1], r->grid[2], r->block[0],
                         r->block[1], r->block[2], r->shared, (void *)r->stream, (void **)0,
                         size ? extra : (void **)0);
        if (err) {
            *error = err;
            return i;
        }
    }
    *error = 0;
    return count;
}
