#!/usr/bin/python
# Copyright: kvmgpu contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: attach, update or detach a libvirt domain's kvmgpu vGPU through the kvmgpu CLI."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vgpu
short_description: Attach, update or detach a VM's kvmgpu vGPU
version_added: "0.1.0"
description:
  - Gives a libvirt/QEMU-KVM domain a kvmgpu vGPU (a device-memory quota and a compute share on one
    of the host's GPUs), changes its settings, or takes it away.
  - Drives the C(kvmgpu) command on the managed host (C(kvmgpu list --json), C(kvmgpu attach --json),
    C(kvmgpu detach --json)); kvmgpu must be installed there, for instance by the
    role C(kvmgpu.kvmgpu.kvmgpu_host).
  - The module compares the vGPU the domain has with the one asked for, so it only runs C(kvmgpu)
    when something must change. Options left out are not compared.
  - When C(kvmgpu) refuses, the task fails with kvmgpu's own error message and hint.
  - The vGPU is stored in the domain's inactive XML; a running VM picks up a new or changed vGPU the
    next time it starts.
author:
  - kvmgpu contributors
options:
  vm:
    description: Name of the libvirt domain.
    type: str
    required: true
    aliases: [name, domain]
  gmem:
    description:
      - Device-memory quota, in libvirt's units (C(8G) is 8 GiB, C(8GB) is 8*10^9 bytes, C(512M),
        or plain bytes).
      - Required when I(state=present) and the domain has no vGPU yet.
    type: str
  compute:
    description:
      - Compute share, a percent of the GPU's time (1-100).
      - Left out, a new vGPU gets kvmgpu's default and an existing one keeps its share.
    type: int
  compute_mode:
    description:
      - C(limit) caps the VM at I(compute); C(share) weights it against the other busy VMs and lets
        it use what they leave idle.
      - Left out, a new vGPU gets kvmgpu's default and an existing one keeps its mode.
    type: str
    choices: [limit, share]
  region:
    description:
      - The shared-memory region between the VM and its worker, a power of two from C(1M) to C(16G),
        in libvirt's units.
      - Left out, a new vGPU gets kvmgpu.toml's C(region_size) (256M) and an existing one keeps its region.
    type: str
  gpu:
    description:
      - Which GPU the vGPU goes on, by index as C(kvmgpu gpus) lists them, or C(auto) to let kvmgpu
        place it.
      - With C(auto) (or left out), a vGPU already on any GPU is left where it is.
    type: str
    default: auto
  state:
    description: Whether the domain should have a vGPU.
    type: str
    choices: [present, absent]
    default: present
  connect:
    description: libvirt connection URI, as C(virsh --connect) takes it. Left out, kvmgpu's default.
    type: str
  kvmgpu_cmd:
    description: The kvmgpu command on the managed host, a name on C(PATH) or a path.
    type: path
    default: kvmgpu
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
notes:
  - Hosts without NVIDIA GPUs have no GPUs unless simulated ones are declared, with
    C(sim_gpus) in C(/etc/kvmgpu/kvmgpu.toml) or C(KVMGPU_SIM_GPUS) in the task's C(environment).
  - In check mode a new vGPU placed with I(gpu=auto) is reported with C(gpu=auto), since kvmgpu
    chooses the GPU only when it attaches.
seealso:
  - name: kvmgpu README
    description: Attaching a vGPU by hand, sizes, compute modes.
    link: https://github.com/kvmgpu/kvmgpu#attach-a-vgpu
"""

EXAMPLES = r"""
- name: Give vm01 an 8 GiB vGPU with half a GPU's time
  kvmgpu.kvmgpu.vgpu:
    vm: vm01
    gmem: 8G
    compute: 50

- name: Weighted share on GPU 1
  kvmgpu.kvmgpu.vgpu:
    vm: vm02
    gmem: 16G
    compute: 30
    compute_mode: share
    gpu: "1"

- name: Take vm01's vGPU away
  kvmgpu.kvmgpu.vgpu:
    vm: vm01
    state: absent

- name: Development host with simulated GPUs and kvmgpu in a virtualenv
  kvmgpu.kvmgpu.vgpu:
    vm: test01
    gmem: 1G
    kvmgpu_cmd: /opt/kvmgpu/venv/bin/kvmgpu
    connect: qemu:///system
  environment:
    KVMGPU_SIM_GPUS: 2x80G
"""

RETURN = r"""
vgpu:
  description:
    - The domain's vGPU after the task, as C(kvmgpu list --json) reports it; empty when it has none.
    - In check mode, the vGPU the task would leave.
  returned: always
  type: dict
  sample:
    vm: vm01
    gpu: 0
    gmem: 8589934592
    compute: 50
    compute_mode: limit
    state: shutoff
before:
  description: The domain's vGPU before the task; empty when it had none.
  returned: always
  type: dict
cmd:
  description: The kvmgpu command the task ran (or would run, in check mode); empty when none.
  returned: always
  type: list
  elements: str
  sample: [kvmgpu, attach, vm01, --gmem, 8G, --compute, "50", --json]
stdout:
  description: What kvmgpu printed on standard output.
  returned: when kvmgpu attach or detach ran
  type: str
stderr:
  description: What kvmgpu printed on standard error.
  returned: when kvmgpu attach or detach ran
  type: str
"""

import json
import re

from ansible.module_utils.basic import AnsibleModule

# libvirt's units, as kvmgpu reads them (kvmgpu/sizes.py): K/M/G/T/P powers of 1024, KB/MB/... of 1000.
_BINARY = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
           "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40, "p": 1 << 50, "pib": 1 << 50}
_DECIMAL = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")
_COMPARED = ("gpu", "gmem", "compute", "compute_mode", "region_size")


def parse_size(text):
    """Bytes in `text`, or None when it is not a size kvmgpu would read (kvmgpu then reports it)."""
    m = _SIZE.match(str(text))
    if not m:
        return None
    unit = m.group(2).lower()
    scale = _BINARY.get(unit, _DECIMAL.get(unit))
    return None if scale is None else int(m.group(1)) * scale


class Kvmgpu:
    """The kvmgpu command on this host. Every failure ends the module with kvmgpu's own words."""

    def __init__(self, module):
        self.module = module
        name = module.params["kvmgpu_cmd"]
        self.argv0 = name if "/" in name else module.get_bin_path(name, required=False)
        if not self.argv0:
            module.fail_json(msg="the kvmgpu command %r is not on PATH: install kvmgpu (role "
                                 "kvmgpu.kvmgpu.kvmgpu_host) or give its path in kvmgpu_cmd" % name)
        self.connect = ["--connect", module.params["connect"]] if module.params["connect"] else []

    def command(self, verb, *args):
        return [self.argv0, verb] + list(args) + self.connect + ["--json"]

    def run(self, cmd, **extra):
        try:
            rc, out, err = self.module.run_command(cmd, environ_update={"NO_COLOR": "1"})
        except OSError as exc:  # run_command raises only where it cannot start the program at all
            self.module.fail_json(msg="cannot run %s: %s" % (cmd[0], exc), cmd=cmd, **extra)
        if rc != 0:
            msg = err.strip() or out.strip() or "%s exited with status %d" % (" ".join(cmd), rc)
            self.module.fail_json(msg=msg, rc=rc, cmd=cmd, stdout=out, stderr=err, **extra)
        return out, err

    def vgpu_of(self, vm):
        """The VM's vGPU from `kvmgpu list --json`, or {} when it has none."""
        cmd = self.command("list")
        if self.connect:
            # A kvmgpu whose `list` takes no --connect lists the default connection's vGPUs.
            rc, out, err = self.module.run_command(cmd, environ_update={"NO_COLOR": "1"})
            if rc != 0 and "--connect" in err and "no such option" in err.lower():
                cmd = [self.argv0, "list", "--json"]
                out, _ = self.run(cmd)
            elif rc != 0:
                out, _ = self.run(cmd)  # fails the task with kvmgpu's words
        else:
            out, _ = self.run(cmd)
        try:
            listing = json.loads(out or "[]")
        except ValueError:
            self.module.fail_json(msg="kvmgpu list --json printed something that is not JSON", cmd=cmd,
                                  stdout=out)
        if isinstance(listing, dict):  # tolerate {"vgpus": [...]}
            listing = listing.get("vgpus", [])
        for entry in listing:
            # "next_boot": null is a running VM whose vGPU was detached: it has none configured
            if entry.get("vm") == vm and entry.get("next_boot", entry) is not None:
                return dict(entry)
        return {}


def desired_vgpu(params, current):
    """The vGPU the task asks for, filled in from `current` where the task leaves a setting out."""
    want = dict(current) if current else {"vm": params["vm"]}
    if params["gmem"] is not None:
        want["gmem"] = parse_size(params["gmem"])
    for key in ("compute", "compute_mode"):
        if params[key] is not None:
            want[key] = params[key]
    if params["region"] is not None:
        want["region_size"] = parse_size(params["region"])
    gpu = params["gpu"]
    if gpu not in (None, "auto"):
        want["gpu"] = int(gpu)
    elif not current:
        want["gpu"] = "auto"
    return want


def differs(current, want):
    return not current or any(current.get(k) != want.get(k) for k in _COMPARED if k in want)


def attach_command(kvmgpu, params):
    args = [params["vm"], "--gmem", str(params["gmem"]).strip()]
    if params["compute"] is not None:
        args += ["--compute", str(params["compute"])]
    if params["compute_mode"] is not None:
        args += ["--compute-mode", params["compute_mode"]]
    if params["region"] is not None:
        args += ["--region", str(params["region"]).strip()]
    if params["gpu"] not in (None, "auto"):
        args += ["--gpu", str(params["gpu"])]
    return kvmgpu.command("attach", *args)


def present(module, kvmgpu, current):
    params = dict(module.params)
    vm = params["vm"]
    if params["gpu"] not in (None, "auto") and not re.match(r"^\d+$", str(params["gpu"]).strip()):
        module.fail_json(msg="gpu must be auto or a GPU index, not %r" % params["gpu"])
    if params["gmem"] is None:
        if not current:
            module.fail_json(msg="vm %s has no vGPU: give gmem to attach one" % vm)
        params["gmem"] = str(current["gmem"])  # attach takes the whole vGPU: keep the quota it has
    elif parse_size(params["gmem"]) is None:
        if module.check_mode:
            module.fail_json(msg="gmem %r is not a size: give a whole number with an optional unit: "
                                 "8G (GiB), 8GB (10^9 bytes), 512M, 1024K, or bytes" % params["gmem"])
        # Let kvmgpu say why, in its own words; it refuses without changing anything.
        cmd = attach_command(kvmgpu, params)
        out, err = kvmgpu.run(cmd, before=current)
        return True, kvmgpu.vgpu_of(vm), cmd, {"stdout": out, "stderr": err}
    if current and params["gpu"] in (None, "auto") and current.get("gpu") is not None:
        params["gpu"] = str(current["gpu"])  # an update leaves the vGPU on the GPU it is on
    want = desired_vgpu(module.params, current)
    if not differs(current, want):
        return False, current, [], {}
    cmd = attach_command(kvmgpu, params)
    if module.check_mode:
        return True, want, cmd, {}
    out, err = kvmgpu.run(cmd, before=current)
    return True, kvmgpu.vgpu_of(vm), cmd, {"stdout": out, "stderr": err}


def absent(module, kvmgpu, current):
    if not current:
        return False, {}, [], {}
    cmd = kvmgpu.command("detach", module.params["vm"])
    if module.check_mode:
        return True, {}, cmd, {}
    out, err = kvmgpu.run(cmd, before=current)
    return True, kvmgpu.vgpu_of(module.params["vm"]), cmd, {"stdout": out, "stderr": err}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            vm=dict(type="str", required=True, aliases=["name", "domain"]),
            gmem=dict(type="str"),
            compute=dict(type="int"),
            compute_mode=dict(type="str", choices=["limit", "share"]),
            region=dict(type="str"),
            gpu=dict(type="str", default="auto"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            connect=dict(type="str"),
            kvmgpu_cmd=dict(type="path", default="kvmgpu"),
        ),
        supports_check_mode=True,
    )
    kvmgpu = Kvmgpu(module)
    current = kvmgpu.vgpu_of(module.params["vm"])
    act = present if module.params["state"] == "present" else absent
    changed, after, cmd, output = act(module, kvmgpu, current)
    result = dict(changed=changed, vgpu=after, before=current, cmd=cmd, **output)
    if module._diff:
        result["diff"] = dict(before=current, after=after,
                              before_header="vGPU of %s" % module.params["vm"],
                              after_header="vGPU of %s" % module.params["vm"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
