"""kvmgpu on a real libvirtd (qemu:///system): XML kept byte for byte, controllers, and a domain
that starts (TCG) with the region file and the channel socket in place."""

from __future__ import annotations

import os
import socket
import stat
import time

import pytest

from kvmgpu.domain import host, xml
from kvmgpu.vgpu import channel_path, region_path

pytestmark = pytest.mark.libvirt
G = 1 << 30

UNKNOWN_TO_KVMGPU = dict(
    extra="""
  <title>a title</title>
  <description>kvmgpu must keep all of this</description>
  <metadata><app:owner xmlns:app='http://example.com/app/1'><app:team>ml</app:team></app:owner></metadata>
  <sysinfo type='smbios'><system><entry name='serial'>kvmgpu-1234</entry></system></sysinfo>
  <features><acpi/><apic/></features>
  <clock offset='localtime'/>
  <on_crash>restart</on_crash>""",
    extra_devices="""
    <controller type='virtio-serial' index='0' ports='16'/>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <console type='pty'><target type='serial'/></console>
    <graphics type='vnc' port='-1' autoport='yes' passwd='s3cret'/>
    <watchdog model='i6300esb' action='reset'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='none'/>""",
)


def xml_of(dom):
    return dom.XMLDesc(host.XML_FLAGS)


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_attach_detach_keeps_everything_else(make_domain, system_conn, config, gpus, machine):
    dom = make_domain(machine=machine, **UNKNOWN_TO_KVMGPU)
    before = xml_of(dom)
    host.attach(system_conn, config, gpus, dom.name(), 8 * G, 25, "limit")
    after = xml_of(dom)
    assert "passwd='s3cret'" in after and "kvmgpu must keep all of this" in after
    assert xml.read_vgpu(after).compute == 25
    assert not host.attach(system_conn, config, gpus, dom.name(), 8 * G, 25, "limit").changed
    host.detach(system_conn, dom.name())
    assert xml_of(dom) == before


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_controllers_libvirt_added_go_with_detach(make_domain, system_conn, config, gpus, machine):
    dom = make_domain(machine=machine)
    before = xml_of(dom)
    host.attach(system_conn, config, gpus, dom.name(), 4 * G)
    root = xml.parse(xml_of(dom))
    assert xml.Controller("virtio-serial", 0) in xml.added_controllers(root)
    host.detach(system_conn, dom.name())
    assert xml_of(dom) == before


def _wait_for(path, seconds=10.0):
    end = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.1)
    return os.path.exists(path)


def test_started_domain_has_region_and_channel(make_domain, system_conn, config, gpus):
    dom = make_domain()
    host.attach(system_conn, config, gpus, dom.name(), 8 * G)
    dom.create()
    try:
        region, sock = region_path(dom.name()), channel_path(config, dom.name())
        assert _wait_for(region) and _wait_for(sock)
        assert os.stat(region).st_size == config.region_size
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(sock)  # QEMU listens: the worker's end connects
        print(f"\nregion {region}: {stat.filemode(os.stat(region).st_mode)} uid={os.stat(region).st_uid}"
              f" gid={os.stat(region).st_gid}; socket {sock}: {stat.filemode(os.stat(sock).st_mode)}"
              f" uid={os.stat(sock).st_uid} gid={os.stat(sock).st_gid};"
              f" dir {stat.filemode(os.stat(config.channel_dir).st_mode)}")
    finally:
        dom.destroy()


def test_running_domain_changes_its_config_for_next_boot(make_domain, system_conn, config, gpus):
    dom = make_domain()
    dom.create()
    try:
        change = host.attach(system_conn, config, gpus, dom.name(), 8 * G)
        assert change.changed and change.running
        assert not host.live_has_vgpu(dom)
        assert xml.read_vgpu(xml_of(dom)) == change.vgpu
    finally:
        dom.destroy()
