"""`kvmgpu attach / detach / list / gpus`: vGPUs in libvirt domains."""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

import typer

from .. import inventory
from ..config import load_config
from ..daemon import api as daemon_api
from ..errors import InvalidInput, KvmgpuError
from ..placement import on_gpu, usage
from ..sizes import format_size, parse_size
from ..vgpu import VGpu
from . import reports_errors


def _host():
    """kvmgpu.domain.host, imported when a command needs libvirt: `kvmgpu worker` and `kvmgpu bench`
    run where libvirt-python is not installed (a GPU host without libvirt, CI)."""
    from ..domain import host
    return host


CONNECT_HELP = "libvirt URI (default: LIBVIRT_DEFAULT_URI, then qemu:///system)"


def _emit(as_json: bool, data, text: str) -> None:
    typer.echo(json.dumps(data, indent=2) if as_json else text)


def _vgpu_dict(v: VGpu | None):
    return dataclasses.asdict(v) if v else None


def _parse_gpu(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit():
        raise InvalidInput(f"--gpu {text!r} is neither 'auto' nor a GPU index", "see `kvmgpu gpus`")
    return int(text)


def _settings(v: VGpu) -> str:
    return (f"{format_size(v.gmem)}, compute {v.compute}% ({v.compute_mode}) on GPU {v.gpu}, "
            f"region {format_size(v.region_size)}")


@reports_errors
def attach(vm: str = typer.Argument(..., help="libvirt domain name"),
           gmem: Optional[str] = typer.Option(None, "--gmem", help="device-memory quota, e.g. 8G "
                                              "(needed for a new vGPU; else the vGPU's is kept)"),
           compute: Optional[int] = typer.Option(None, "--compute", help="compute share in percent, 1..100 "
                                                 "(default: the vGPU's; 100 for a new one)"),
           compute_mode: Optional[str] = typer.Option(None, "--compute-mode", help="limit | share "
                                                      "(default: the vGPU's; share for a new one)"),
           gpu: str = typer.Option("auto", "--gpu", help="auto (the GPU it has, if it fits) | GPU index"),
           region: Optional[str] = typer.Option(None, "--region", help="the VM's shared-memory region with "
                                                "its worker, a power of two from 1M to 16G (default: the "
                                                "vGPU's; region_size of kvmgpu.toml, 256M, for a new one)"),
           connect: Optional[str] = typer.Option(None, "--connect", "-c", help=CONNECT_HELP),
           as_json: bool = typer.Option(False, "--json", help="print the result as JSON")) -> None:
    """Give VM a vGPU (or change its vGPU) in its persistent configuration. On a VM that has one,
    what is not given is kept."""
    size = None if gmem is None else parse_size(gmem, "--gmem")
    region_size = None if region is None else parse_size(region, "--region")
    want = _parse_gpu(gpu)
    config = load_config()
    gpus = inventory.discover(config)
    host = _host()
    conn = host.open_connection(connect)
    change = host.attach(conn, config, gpus, vm, size, compute, compute_mode, want, region_size)
    v = change.vgpu
    what = _settings(v)
    if not change.changed:
        text = f"{vm} already has this vGPU ({what}); nothing changed"
    elif change.previous:
        text = f"updated {vm}'s vGPU: {what} (was {_settings(change.previous)})"
    else:
        text = f"attached a vGPU to {vm}: {what}"
    if change.changed and change.running:
        text += f"\n{vm} is running: the change takes effect at its next boot (shut it down and start it)"
    _emit(as_json, {"vm": vm, "changed": change.changed, "running": change.running,
                    "restart_needed": change.changed and change.running,
                    "vgpu": _vgpu_dict(v), "previous": _vgpu_dict(change.previous)}, text)


@reports_errors
def detach(vm: str = typer.Argument(..., help="libvirt domain name"),
           connect: Optional[str] = typer.Option(None, "--connect", "-c", help=CONNECT_HELP),
           as_json: bool = typer.Option(False, "--json", help="print the result as JSON")) -> None:
    """Take VM's vGPU out of its persistent configuration (exit 0, nothing changed, if it has none)."""
    host = _host()
    conn = host.open_connection(connect)
    change = host.detach(conn, vm)
    if not change.changed:
        text = f"{vm} has no vGPU; nothing changed"
    else:
        text = f"detached the vGPU from {vm}"
        if change.running:
            text += f"\n{vm} is running: the change takes effect at its next boot"
    _emit(as_json, {"vm": vm, "changed": change.changed, "running": change.running,
                    "restart_needed": change.changed and change.running,
                    "vgpu": _vgpu_dict(change.vgpu)}, text)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _differs(live: VGpu | None, configured: VGpu | None) -> bool:
    """Whether a running VM's vGPU (None: none) is not the one configured for its next boot."""
    if live is None or configured is None:
        return live is not configured
    return dataclasses.replace(live, id=configured.id, gpu=configured.gpu) != configured


def _next_boot(now: str, then: str) -> str:
    return now if now == then else f"{now} ({then} at next boot)"


@reports_errors
def list_(connect: Optional[str] = typer.Option(None, "--connect", "-c", help=CONNECT_HELP),
          as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List the vGPUs of all defined domains. A running VM shows the vGPU it runs with, and what
    it gets at its next boot where that differs (attach and detach change only the next boot)."""
    host = _host()
    conn = host.open_connection(connect)
    usages = daemon_api.live_usages(load_config())  # None: no daemon to ask
    unreadable: dict[str, KvmgpuError] = {}
    configured = {v.vm: v for v in host.list_vgpus(conn, unreadable=unreadable.setdefault)}
    live = {v.vm: v for v in host.running_vgpus(conn, unreadable=unreadable.setdefault)}
    for vm in sorted(unreadable):                     # left out, but not silently
        typer.echo(f"warning: {unreadable[vm]}", err=True)
    items = []
    for vm in sorted(set(configured) | set(live)):
        now, then = live.get(vm), configured.get(vm)
        try:
            state = host.state(host.lookup(conn, vm))
        except KvmgpuError:
            continue                                  # undefined meanwhile
        running = state not in ("shut off", "crashed")
        # the top level is the configured vGPU (what attach and detach manage), else the one it runs with
        items.append({**dataclasses.asdict(then if then is not None else live[vm]),
                      "used": None if usages is None else usages.get(vm),
                      "daemon": usages is not None, "state": state,
                      "live": _vgpu_dict(now) if running else None,
                      "next_boot": _vgpu_dict(then),
                      "pending_restart": running and _differs(now, then)})
    if as_json:
        return _emit(True, items, "")
    if not items:
        return typer.echo("no vGPUs")
    rows = [["VM", "GPU", "QUOTA", "USED", "COMPUTE", "STATE"]]
    for i in items:
        if not i["daemon"]:
            used = "unknown (daemon not running)"
        else:
            used = "-" if i["used"] is None else format_size(i["used"])
        now, then = i["live"], i["next_boot"]
        shown = now or then                           # a running VM: what it runs with
        gpu, quota, compute = str(shown["gpu"]), format_size(shown["gmem"]), \
            f"{shown['compute']}% {shown['compute_mode']}"
        state = i["state"]
        if i["pending_restart"] and now is None:
            state += " (vGPU at next boot)"
        elif i["pending_restart"] and then is None:
            state += " (no vGPU at next boot)"
        elif i["pending_restart"]:
            gpu = _next_boot(gpu, str(then["gpu"]))
            quota = _next_boot(quota, format_size(then["gmem"]))
            compute = _next_boot(compute, f"{then['compute']}% {then['compute_mode']}")
            state += " (vGPU changes at next boot)"
        rows.append([i["vm"], gpu, quota, used, compute, state])
    typer.echo(_table(rows))


@reports_errors
def gpus(connect: Optional[str] = typer.Option(None, "--connect", "-c", help=CONNECT_HELP),
         as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List the host's GPUs, what is promised on each, and what is free to promise. A running VM
    counts with the vGPU its worker serves and the one configured for its next boot, on each GPU
    the larger of the two, until it restarts."""
    config = load_config()
    found = inventory.discover(config)
    host = _host()
    conn = host.open_connection(connect)
    vgpus = host.list_vgpus(conn)
    running = host.running_vgpus(conn)
    uses = usage(found, vgpus, config.context_overhead, live=running)
    live = daemon_api.live_usages(config)  # None: no daemon, so nobody knows what is in use

    def used_on(g):
        return None if live is None else sum(live.get(v.vm, 0) for v in running if on_gpu(v, g, found))
    items = [{**dataclasses.asdict(u.gpu), "promised": u.promised, "free": u.free, "vgpus": u.vgpus,
              "used": used_on(u.gpu)} for u in uses]
    if as_json:
        return _emit(True, items, "")
    if not items:
        return typer.echo("no GPUs (for a development host, set KVMGPU_SIM_GPUS=2x80G)")
    rows = [["INDEX", "NAME", "UUID", "TOTAL", "PROMISED", "FREE", "USED", "BUSY", "VGPUS", "SIMULATED"]]
    for i in items:
        used = "unknown (daemon not running)" if i["used"] is None else format_size(i["used"])
        rows.append([str(i["index"]), i["name"], i["uuid"], format_size(i["total_memory"]),
                     format_size(i["promised"]), format_size(max(i["free"], 0)), used,
                     "-" if i["utilization"] is None else f"{i['utilization']}%", str(i["vgpus"]),
                     "yes (simulated)" if i["simulated"] else "no"])
    typer.echo(_table(rows) + f"\n(promised includes {format_size(config.context_overhead)} "
               "context overhead per vGPU, and a running VM's vGPU as it runs until it restarts)")


def register(app: typer.Typer) -> None:
    """Add attach, detach, list and gpus to the `kvmgpu` app."""
    app.command()(attach)
    app.command()(detach)
    app.command("list")(list_)
    app.command()(gpus)
