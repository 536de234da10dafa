"""domain.events and the daemon's questions in domain.host, on libvirt's test driver: lifecycle
events arrive as words, running and stopped vGPUs are told apart, unreadable metadata is reported
and left out."""

from __future__ import annotations

import logging
import queue
import uuid

import pytest

from kvmgpu.domain import events, host
from kvmgpu.domain.events import DomainStarted, DomainStopped, Libvirt

G = 1 << 30


@pytest.fixture
def test_domain(test_conn):
    """A fresh, stopped domain on the test driver; undefined (and destroyed) afterwards."""
    name = f"kvmgpu-ev-{uuid.uuid4().hex[:8]}"
    dom = test_conn.defineXML(f"<domain type='test'><name>{name}</name><memory>65536</memory>"
                              "<os><type>hvm</type></os></domain>")
    yield name
    if dom.isActive():
        dom.destroy()
    dom.undefine()


def next_event(q: queue.Queue, vm: str):
    while True:
        event = q.get(timeout=10)
        if getattr(event, "vm", None) == vm:
            return event


def test_lifecycle_events_arrive_as_words(test_conn, test_domain):
    q: queue.Queue = queue.Queue()
    followed = Libvirt("test:///default", q)
    followed.connect()
    try:
        dom = followed.conn.lookupByName(test_domain)
        dom.create()
        assert next_event(q, test_domain) == DomainStarted(test_domain)
        dom.destroy()
        assert next_event(q, test_domain) == DomainStopped(test_domain, "destroyed")
    finally:
        followed.disconnect()
    assert not followed.connected


def test_event_codes_have_words():
    import libvirt
    assert events.lifecycle_event("vm", libvirt.VIR_DOMAIN_EVENT_STOPPED,
                                  libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED) == DomainStopped("vm", "crashed")
    assert events.lifecycle_event("vm", libvirt.VIR_DOMAIN_EVENT_STOPPED, 999) == DomainStopped("vm", "stopped")
    assert events.lifecycle_event("vm", libvirt.VIR_DOMAIN_EVENT_RESUMED, 0) == DomainStarted("vm")
    assert events.lifecycle_event("vm", libvirt.VIR_DOMAIN_EVENT_DEFINED, 0) is None
    assert events.close_reason(libvirt.VIR_CONNECT_CLOSE_REASON_EOF) == "libvirtd went away"
    assert events.close_reason(77) == "reason 77"


def test_running_and_stopped_vgpus(test_conn, test_domain, config, gpus):
    vgpu = host.attach(test_conn, config, gpus, test_domain, 2 * G).vgpu
    assert host.stopped_vgpu_vms(test_conn) == [test_domain]
    assert host.running_vgpu(test_conn, test_domain) is None and not host.is_active(test_conn, test_domain)
    test_conn.lookupByName(test_domain).create()
    assert host.running_vgpu(test_conn, test_domain) == vgpu and host.is_active(test_conn, test_domain)
    assert vgpu in host.running_vgpus(test_conn)
    assert test_domain not in host.stopped_vgpu_vms(test_conn)
    assert host.running_vgpu(test_conn, "kvmgpu-no-such-vm") is None
    assert not host.is_active(test_conn, "kvmgpu-no-such-vm")


def test_a_running_domain_with_unreadable_metadata_is_reported_and_left_out(
        test_conn, test_domain, config, gpus, caplog):
    host.attach(test_conn, config, gpus, test_domain, 2 * G)
    dom = test_conn.lookupByName(test_domain)
    text = dom.XMLDesc(host.XML_FLAGS).replace('mode="share"', 'mode="fastest"')
    test_conn.defineXML(text)
    dom.create()
    told = []
    assert host.running_vgpu(test_conn, test_domain, unreadable=lambda vm, e: told.append((vm, str(e)))) is None
    assert told and told[0][0] == test_domain and "compute_mode" in told[0][1] and "fastest" in told[0][1]
    followed = Libvirt("test:///default", queue.Queue())
    followed.conn = test_conn                 # the questions only; no events needed
    with caplog.at_level(logging.WARNING, logger="kvmgpu.domain.events"):
        assert test_domain not in followed.running_vgpus()
    assert f"{test_domain}: cannot read its vGPU from its metadata" in caplog.text
