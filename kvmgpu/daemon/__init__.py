"""The host daemon: one worker per running VM with a vGPU, the local API, metrics and history.

Modules: `service` (the main loop), `lifecycle` (libvirt and udev events in), `workers` (worker
processes), `api` (the unix-socket API and its client), `metrics` (Prometheus text), `history`
(SQLite), `status` (what API and metrics report), `command` (`kvmgpu daemon`), `install`
(putting the hook and unit in place). See docs/daemon.md.
"""
