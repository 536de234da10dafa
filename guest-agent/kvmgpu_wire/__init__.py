"""kvmgpu's wire format, shared by the guest and the host: both import it, neither imports the
other's internals.

- `spec` declares every forwarded call once, with the kind of each argument (`kinds`), which is
  also the host's check of it. `ops` is generated from `spec` by `make gen` (tools/gen_wire.py), as
  is the C header guest-agent/include/kvmgpu_wire.h: do not edit either by hand.
- `protocol`: frames, messages and limits, and the sans-IO `Connection` both ends run.
- `mailbox`: the layout of a session's mailbox (the last bytes of its window) and both its ends.
- `region`: the shared-memory region both ends map, and a session's window of it.
- `cudefs`: the CUDA driver API's enums and result codes (CUresult), with cuda-python's names.
- `trace`: the opt-in phase trace both ends stamp (`KVMGPU_TRACE`), and its analyzer.
"""
