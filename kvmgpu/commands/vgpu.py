"""`kvmgpu attach / detach / list / gpus`: vGPUs in libvirt domains."""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

import typer

from .. import inventory
from ..config import load_config
from ..daemon import api as daemon_api
from ..errors import InvalidInput
from ..placement import usage
from ..sizes import format_size, parse_size
from ..vgpu import COMPUTE_MODES, VGpu
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
    return f"{format_size(v.gmem)}, compute {v.compute}% ({v.compute_mode}) on GPU {v.gpu}"


@reports_errors
def attach(vm: str = typer.Argument(..., help="libvirt domain name"),
           gmem: Optional[str] = typer.Option(None, "--gmem", help="device-memory quota, e.g. 8G "
                                              "(needed for a new vGPU; else the vGPU's is kept)"),
           compute: Optional[int] = typer.Option(None, "--compute", help="compute share in percent, 1..100 "
                                                 "(default: the vGPU's; 100 for a new one)"),
           compute_mode: Optional[str] = typer.Option(None, "--compute-mode", help="limit | share "
                                                      "(default: the vGPU's; share for a new one)"),
           gpu: str = typer.Option("auto", "--gpu", help="auto (the GPU it has, if it fits) | GPU index"),
           connect: Optional[str] = typer.Option(None, "--connect", "-c", help=CONNECT_HELP),
           as_json: bool = typer.Option(False, "--json", help="print the result as JSON")) -> None:
    """Give VM a vGPU (or change its vGPU) in its persistent configuration. On a VM that has one,
    what is not given is kept."""
    size = None if gmem is None else parse_size(gmem, "--gmem")
    want = _parse_gpu(gpu)
    config = load_config()
    gpus = inventory.discover(config)
    host = _host()
    conn = host.open_connection(connect)
    change = host.attach(conn, config, gpus, vm, size, compute, compute_mode, want)
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


@reports_errors
def list_(connect: Optional[str] = typer.Option(None, "--connect", "-c", help=CONNECT_HELP),
          as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List the vGPUs of all defined domains."""
    host = _host()
    conn = host.open_connection(connect)
    usages = daemon_api.live_usages(load_config())  # None: no daemon to ask
    items = []
    for v in host.list_vgpus(conn):
        dom = host.lookup(conn, v.vm)
        state = host.state(dom)
        pending = state == "running" and not host.live_has_vgpu(dom)
        items.append({**dataclasses.asdict(v), "used": None if usages is None else usages.get(v.vm),
                      "daemon": usages is not None, "state": state,
                      "pending_restart": pending})
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
        state = i["state"] + (" (vGPU at next boot)" if i["pending_restart"] else "")
        rows.append([i["vm"], str(i["gpu"]), format_size(i["gmem"]), used,
                     f"{i['compute']}% {i['compute_mode']}", state])
    typer.echo(_table(rows))


@reports_errors
def gpus(connect: Optional[str] = typer.Option(None, "--connect", "-c", help=CONNECT_HELP),
         as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List the host's GPUs, what is promised on each, and what is free to promise."""
    config = load_config()
    found = inventory.discover(config)
    host = _host()
    conn = host.open_connection(connect)
    vgpus = host.list_vgpus(conn)
    uses = usage(found, vgpus, config.context_overhead)
    live = daemon_api.live_usages(config)  # None: no daemon, so nobody knows what is in use

    def used_on(index: int):
        return None if live is None else sum(live.get(v.vm, 0) for v in vgpus if v.gpu == index)
    items = [{**dataclasses.asdict(u.gpu), "promised": u.promised, "free": u.free, "vgpus": u.vgpus,
              "used": used_on(u.gpu.index)} for u in uses]
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
               "context overhead per vGPU)")


def register(app: typer.Typer) -> None:
    """Add attach, detach, list and gpus to the `kvmgpu` app."""
    app.command()(attach)
    app.command()(detach)
    app.command("list")(list_)
    app.command()(gpus)
