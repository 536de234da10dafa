#!/usr/bin/env python3
"""A stand-in for the `kvmgpu` CLI's attach/detach/list --json contract, for testing the Ansible
module's logic (idempotence, check mode, diff, errors) on its own. State: $FAKE_KVMGPU_STATE."""
import json
import os
import re
import sys

STATE = os.environ["FAKE_KVMGPU_STATE"]
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "gb": 10**9}


def load():
    return json.load(open(STATE)) if os.path.exists(STATE) else {"vms": [], "vgpus": {}, "calls": []}


def main(argv):
    state = load()
    verb, args = argv[0], argv[1:]
    state["calls"].append(argv)
    opts = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--") and args[i] != "--json"}
    out = None
    if verb == "list":
        out = list(state["vgpus"].values())
    elif verb in ("attach", "detach"):
        vm = args[0]
        if vm not in state["vms"]:
            print(f"error: domain {vm!r} does not exist\n  hint: virsh list --all", file=sys.stderr)
            return 3
        if verb == "detach":
            out = state["vgpus"].pop(vm, None)
        else:
            m = re.match(r"^(\d+)([a-zA-Z]*)$", opts["--gmem"])
            if not m or m.group(2).lower() not in UNITS:
                print(f"error: --gmem {opts['--gmem']!r} is not a size", file=sys.stderr)
                return 2
            gmem = int(m.group(1)) * UNITS[m.group(2).lower()]
            if gmem > 80 << 30:
                print(f"error: no GPU has {gmem} bytes free for {vm}", file=sys.stderr)
                return 4
            old = state["vgpus"].get(vm, {})
            out = state["vgpus"][vm] = {
                "vm": vm, "gpu": int(opts.get("--gpu", old.get("gpu", 0))), "gmem": gmem,
                "compute": int(opts.get("--compute", old.get("compute", 100))),
                "compute_mode": opts.get("--compute-mode", old.get("compute_mode", "share")),
                "region_size": (int(opts["--region"].rstrip("M")) << 20) if "--region" in opts
                else old.get("region_size", 256 << 20),
                "state": "shutoff"}
    json.dump(state, open(STATE, "w"))
    print(json.dumps(out))
    return 0


sys.exit(main(sys.argv[1:]))
