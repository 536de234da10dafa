"""kvmgpu's wire format, shared by the guest and the host.

`spec` declares every forwarded call once, with the kind of each argument (`kinds`), which is also
the host's check of it. `ops` is generated from `spec` by `make gen` (tools/gen_wire.py), as is the
C header guest-agent/include/kvmgpu_wire.h: do not edit either by hand.
"""
