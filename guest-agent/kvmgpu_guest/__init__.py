"""kvmgpu guest agent: the CUDA driver API forwarded to the host's vGPU worker."""

__version__ = "0.1.0"
