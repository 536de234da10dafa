"""kvmgpu's stand-in for cuda-python's `cuda` package, put first on PYTHONPATH by `kvmgpu-guest run`.

`from cuda.bindings import driver` and the older `from cuda import cuda` both give
kvmgpu_guest.driver: the CUDA driver API forwarded to the host's vGPU worker.
"""
