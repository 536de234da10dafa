"""kvmgpu: mediated vGPUs for libvirt/QEMU-KVM guests."""

__version__ = "0.1.0"
