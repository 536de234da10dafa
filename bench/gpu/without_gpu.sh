#!/bin/sh
# Run a command with the GPU's device files turned into /dev/null (for `unshare -m`: the mounts are
# the namespace's own): the NVIDIA driver and NVML cannot reach the GPU, as in a VM.
for d in /dev/nvidia*; do
    [ -c "$d" ] && mount --bind /dev/null "$d"
done
exec "$@"
