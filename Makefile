# kvmgpu: `make demo` runs the main job, `make test` installs what the tests need and runs them.
# Both do all their set-up on a fresh Debian 12 machine (they run apt-get as root when needed).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEBS := libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils \
        python3-libvirt python3-pyudev python3-venv libxml2-utils gcc libc6-dev python3-dev
PYTEST_ARGS ?=

.PHONY: test demo deps venv libvirtd clean gen libcuda

deps: .stamps/debs
.stamps/debs:
	@mkdir -p .stamps
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo ">> installing Debian packages:" $$missing; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@touch $@

venv: $(VENV)/.ready
$(VENV)/.ready: .stamps/debs pyproject.toml setup.py kvmgpu/backend/launcher.c guest-agent/pyproject.toml \
                guest-agent/setup.py $(wildcard guest-agent/include/*.h) \
                $(wildcard guest-agent/libcuda/*.c guest-agent/libcuda/*.h guest-agent/libnvml/*.c guest-agent/libnvml/*.h)
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ./guest-agent -e '.[test]'
	@touch $@

# libvirtd without systemd: start virtlogd and libvirtd as daemons unless they already run.
# /dev/kvm must be root:kvm 0660 as Debian's udev rules make it: where a container left it root-only,
# libvirtd keeps re-probing QEMU's capabilities and every define hangs.
libvirtd: .stamps/debs
	@if [ -e /dev/kvm ] && [ "$$(stat -c %G:%a /dev/kvm)" != "kvm:660" ]; then \
	  echo ">> /dev/kvm: root:kvm 0660 (was $$(stat -c %U:%G:%a /dev/kvm))"; chgrp kvm /dev/kvm && chmod 0660 /dev/kvm; fi
	@pgrep -x virtlogd >/dev/null || virtlogd -d
	@pgrep -x libvirtd >/dev/null || libvirtd -d
	@for i in $$(seq 1 50); do virsh -c qemu:///system version >/dev/null 2>&1 && exit 0; sleep 0.2; done; \
	  echo "libvirtd did not come up on qemu:///system" >&2; exit 1

demo: venv libvirtd
	$(PY) -m kvmgpu.demo

test: venv libvirtd
	$(PY) -m pytest -q $(PYTEST_ARGS)

# What is generated from the op specification (guest-agent/kvmgpu_wire/spec.py); a test fails when stale.
gen:
	/usr/bin/python3 tools/gen_wire.py

# The native guest libraries alone, libcuda.so.1 and libnvidia-ml.so.1 (the guest package builds them into kvmgpu_guest/lib/ too).
libcuda:
	/usr/bin/python3 guest-agent/libcuda/build.py build/libcuda

clean:
	rm -rf $(VENV) .stamps .pytest_cache
