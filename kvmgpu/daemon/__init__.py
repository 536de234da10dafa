"""The host daemon: one worker per running VM with a vGPU, the local API, metrics and history.

Modules: `service` (the main loop), `udev` (GPUs coming and going; libvirt's events come from
kvmgpu.domain.events), `workers` (worker processes), `api` (the unix-socket API and its client),
`metrics` (Prometheus text), `history` (SQLite), `status` (what API and metrics report),
`install` (putting the hook and unit in place). See docs/daemon.md.
"""
