"""The metrics text is Prometheus' exposition format 0.0.4, checked line by line."""

import re
import urllib.error
import urllib.request

import pytest

from kvmgpu.daemon.metrics import CONTENT_TYPE, METRICS, MetricsServer, escape_label, render
from kvmgpu.daemon.status import DaemonStatus, GpuStatus, Status, VgpuStatus

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? '
                     r'(-?[0-9.e+-]+|NaN|[+-]Inf)$')


def status(vgpus=(), gpus=()):
    return Status(DaemonStatus(pid=1, started=0.0, libvirt="connected", uri="qemu:///system",
                               metrics="127.0.0.1:1"), tuple(gpus), tuple(vgpus))


def vgpu(vm="vm01", **kw):
    base = dict(vm=vm, id="id", gpu=0, gpu_uuid="GPU-x", gmem=8 << 30, compute=50, compute_mode="share",
                state="running", backend="sim", worker_pid=42, adopted=False, started=1.0, used=1 << 30,
                peak=2 << 30, calls=1234, bytes=10, gpu_seconds=1.5)
    base.update(kw)
    return VgpuStatus(**base)


GPU = GpuStatus(index=0, uuid="GPU-x", name='Sim "GPU"\\n', total_memory=16 << 30, simulated=True,
                promised=8 << 30, used=1 << 30, vgpus=1)


def test_every_line_is_help_type_or_a_sample():
    text = render(status([vgpu(), vgpu("vm02", state="restarting")], [GPU]))
    assert text.endswith("\n")
    families = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            families.append(line.split()[2])
        elif line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert name == families[-1] and kind in ("gauge", "counter")
        else:
            m = _SAMPLE.match(line)
            assert m, line
            assert m.group(1) == families[-1], line      # samples follow their family's header
    assert families == list(METRICS)                     # each family once, HELP before TYPE


def test_values_and_labels():
    text = render(status([vgpu()], [GPU]))
    assert 'kvmgpu_vgpu_memory_used_bytes{vm="vm01",gpu="0"} 1073741824' in text
    assert 'kvmgpu_vgpu_memory_limit_bytes{vm="vm01",gpu="0"} 8589934592' in text
    assert 'kvmgpu_vgpu_gpu_seconds_total{vm="vm01",gpu="0"} 1.5' in text
    assert 'kvmgpu_vgpu_calls_total{vm="vm01",gpu="0"} 1234' in text
    assert 'kvmgpu_gpu_memory_promised_bytes{gpu="0"} 8589934592' in text
    assert 'kvmgpu_gpu_memory_used_bytes{gpu="0"} 1073741824' in text
    assert 'kvmgpu_gpu_info{gpu="0",name="Sim \\"GPU\\"\\\\n",uuid="GPU-x",simulated="true"} 1' in text
    assert "# TYPE kvmgpu_vgpu_calls_total counter" in text
    assert "kvmgpu_libvirt_connected 1" in text


def test_no_vgpus_still_has_every_family():
    text = render(status())
    for name in METRICS:
        assert f"# TYPE {name} " in text


def test_escape_label():
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_served_over_http_on_loopback():
    server = MetricsServer("127.0.0.1", 0, lambda: status([vgpu()], [GPU]))
    server.start()
    try:
        with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"] == CONTENT_TYPE
            assert "kvmgpu_vgpu_calls_total" in r.read().decode()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://{server.address}/other", timeout=5)
        assert e.value.code == 404
    finally:
        server.close()
