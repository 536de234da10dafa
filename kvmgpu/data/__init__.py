"""Files kvmgpu installs on a host: the systemd unit and the libvirt hook (see docs/daemon.md)."""
