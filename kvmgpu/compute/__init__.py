"""Compute quota: GPU time per VM and the share/limit scheduler.

The workers of one GPU take turns: a worker holds the GPU for a slice, its GPU time in the slice is
measured with CUDA events, and the next slice goes to the busy VM that is furthest behind its
entitlement. `ComputeGate` is all a worker calls (see docs/compute.md); `policy` is the pure logic,
`board` the per-GPU shared table the workers coordinate through, `meter` the event timing.
"""

from kvmgpu.compute.gate import ComputeGate, open_gate
from kvmgpu.compute.policy import LIMIT, SHARE

__all__ = ["ComputeGate", "open_gate", "LIMIT", "SHARE"]
