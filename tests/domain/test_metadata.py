"""kvmgpu's <metadata> element, declared once (kvmgpu/domain/metadata.py): every field is written
and read alike; domains written by earlier kvmgpu still read; an edited or hostile value is refused
with an error that names the field."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmgpu.domain import metadata, xml
from kvmgpu.errors import InvalidInput
from kvmgpu.vgpu import VGpu

SAMPLES = Path(__file__).with_name("samples")
KVMGPU = str(Path(sys.executable).with_name("kvmgpu"))
VGPU = VGpu(id="6f1c7f7e-2b1e-4d3c-9a55-0d1f2e3c4b5a", vm="vm01", gpu=1,
            gpu_uuid="GPU-830ca514-062e-5d80-8770-ebc50789eb16", gmem=8 << 30, compute=50,
            compute_mode="limit", region_size=256 << 20)
ADDED = (xml.Controller("pci", 4, "pcie-root-port"), xml.Controller("virtio-serial", 0))
# another value for every field: each must show in the XML and come back
OTHER = {"id": "0b5d3c1e-9f7a-4b2c-8d6e-1a2b3c4d5e6f", "gpu": 3, "gpu_uuid": "GPU-0000-other",
         "gmem": 12345, "compute": 7, "compute_mode": "share", "region_size": 1 << 30}


def domain(meta: str, name: str = "vm01") -> str:
    return (f"<domain type='test'><name>{name}</name><metadata>{meta}</metadata><memory>65536</memory>"
            "<os><type>hvm</type></os></domain>")


def test_every_field_is_declared_once_and_round_trips():
    assert set(OTHER) == {f.name for f in metadata.VGPU.fields}
    root = xml.parse(domain(xml.render_metadata(VGPU, ADDED)))
    assert xml.read_vgpu(root) == VGPU and xml.added_controllers(root) == ADDED
    for name, value in OTHER.items():
        changed = dataclasses.replace(VGPU, **{name: value})
        text = xml.render_metadata(changed)
        assert text != xml.render_metadata(VGPU) and str(value) in text, name
        assert xml.read_vgpu(domain(text)) == changed, name


def test_the_rendered_text_is_what_the_template_wrote():
    # today's template output, stored (not regenerated): existing domains must not see a change
    stored = (SAMPLES / "metadata-template-v1.xml").read_text()
    assert metadata.render(VGPU, (xml.Controller("pci", 4, "pcie-root-port"),
                                  xml.Controller("virtio-serial", 0))) == stored


def test_a_domain_written_by_earlier_kvmgpu_still_reads():
    # `virsh dumpxml --inactive` of a q35 domain attached by kvmgpu before the declaration
    root = xml.parse((SAMPLES / "q35-attached-v1.xml").read_text())
    assert xml.read_vgpu(root) == VGpu(
        id="c13b161b-e6e9-4cee-8f60-7bf765970424", vm="kvmgpu-sample-v1", gpu=0,
        gpu_uuid="GPU-898545c3-fd96-5e10-8764-012c8de670ca", gmem=8 << 30, compute=50,
        compute_mode="limit", region_size=256 << 20)
    assert xml.added_controllers(root) == (xml.Controller("pci", 4, "pcie-root-port"),
                                           xml.Controller("pci", 5, "pcie-to-pci-bridge"),
                                           xml.Controller("virtio-serial", 0))
    # attaching the same vGPU again changes nothing (no redefine of an existing domain)
    before = xml.to_string(root)
    xml.apply_vgpu(root, xml.read_vgpu(root), "/run/kvmgpu/kvmgpu-sample-v1.sock")
    assert xml.to_string(root) == before


def test_the_metadata_is_valid_in_a_domain(validate):
    text = (SAMPLES / "q35-attached-v1.xml").read_text()
    validate(text)
    meta = xml.render_metadata(dataclasses.replace(VGPU, **OTHER), ADDED)
    validate(domain(meta).replace("type='test'", "type='qemu'", 1))


GOOD = (SAMPLES / "metadata-template-v1.xml").read_text()
HOSTILE = [  # (edit of the template's text, the field named, what the error says is wrong)
    ("<kvmgpu:gmem unit='bytes'>8589934592", "<kvmgpu:gmem unit='MiB'>8192", "gmem (<kvmgpu:gmem>",
     "unit 'MiB' is not 'bytes'"),
    ("<kvmgpu:gmem unit='bytes'>8589934592", "<kvmgpu:gmem>8589934592", "gmem", "unit None is not 'bytes'"),
    (">8589934592<", ">-8589934592<", "gmem", "-8589934592 is not more than zero"),
    (">8589934592<", ">8G<", "gmem", "'8G' is not a whole number"),
    ("mode='limit'", "mode='fastest'", "compute_mode (<kvmgpu:compute mode=...>",
     "'fastest' is not one of share, limit"),
    ("mode='limit'", "", "compute_mode", "missing"),
    (">50<", ">150<", "compute (<kvmgpu:compute>", "150 is not from 1 to 100"),
    (">50<", "><", "compute", "missing"),
    (">268435456<", ">1000000<", "region_size", "1000000 is not a power of two of at least 1 MiB"),
    ("index='1'", "index='-1'", "gpu (<kvmgpu:gpu index=...>", "-1 is less than 0"),
    ("uuid='GPU-830ca514-062e-5d80-8770-ebc50789eb16'", "uuid='GPU x'", "gpu_uuid", "is not a GPU uuid"),
    ("id='6f1c7f7e-2b1e-4d3c-9a55-0d1f2e3c4b5a'", "id='x'", "id (<kvmgpu:vgpu id=...>", "'x' is not a UUID"),
    ("  <kvmgpu:region unit='bytes'>268435456</kvmgpu:region>\n", "", "region_size (<kvmgpu:region>", "missing"),
    ("<kvmgpu:region", "<kvmgpu:region unit='bytes'>1</kvmgpu:region><kvmgpu:region", "region_size",
     "written 2 times"),
    ("type='virtio-serial' index='0'", "type='virtio-serial' index='first'",
     "index (<kvmgpu:added-controller index=...>", "'first' is not a whole number"),
]


@pytest.mark.parametrize("old,new,field,problem", HOSTILE, ids=[h[2].split(" ")[0] + ":" + h[1][:24] for h in HOSTILE])
def test_an_edited_value_is_an_error_naming_the_field(old, new, field, problem):
    assert old in GOOD
    root = xml.parse(domain(GOOD.replace(old, new, 1)))
    with pytest.raises(InvalidInput) as e:
        xml.read_vgpu(root)
        xml.added_controllers(root)
    message = e.value.message
    assert message.startswith("domain 'vm01' has kvmgpu metadata that cannot be read: " + field), message
    assert problem in message, message
    assert "virsh edit vm01" in e.value.hint and "kvmgpu detach vm01" in e.value.hint


def test_a_value_that_could_not_be_read_back_is_never_written():
    with pytest.raises(InvalidInput) as e:
        xml.render_metadata(dataclasses.replace(VGPU, compute_mode="fastest"))
    assert "compute_mode" in e.value.message and "'fastest' is not one of share, limit" in e.value.message
    root = xml.parse(domain("").replace("<metadata></metadata>", "<devices/>"))
    before = xml.to_string(root)
    with pytest.raises(InvalidInput) as e:
        xml.apply_vgpu(root, dataclasses.replace(VGPU, gmem=-1), "/run/kvmgpu/vm01.sock")
    assert "gmem" in e.value.message and "-1 is not more than zero" in e.value.message
    assert xml.to_string(root) == before           # nothing half-added


def test_detach_removes_unreadable_metadata():
    root = xml.parse(domain(GOOD.replace("index='4'", "index='four'")))
    assert xml.remove_vgpu(root)
    assert xml.read_vgpu(root) is None and "kvmgpu" not in xml.to_string(root)


def _cli(tmp_path, *args):
    env = {**os.environ, "KVMGPU_SIM_GPUS": "2x80G", "KVMGPU_CONFIG": str(tmp_path / "k.toml")}
    (tmp_path / "k.toml").write_text(f'channel_dir = "{tmp_path}/run"\nstate_dir = "{tmp_path}/state"\n'
                                     f'api_socket = "{tmp_path}/api.sock"\n')
    return subprocess.run([KVMGPU, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


EDITED = ("error: domain 'edited' has kvmgpu metadata that cannot be read: gmem (<kvmgpu:gmem>, the memory "
          "quota): unit 'MiB' is not 'bytes'\n  hint: see `virsh dumpxml --inactive edited`")


@pytest.fixture
def edited(tmp_path):
    """A test-driver URI whose domain `edited` has metadata with gmem in MiB; the driver loads the
    file afresh for each kvmgpu command, so no command sees another's change."""
    meta = GOOD.replace("<kvmgpu:gmem unit='bytes'>8589934592", "<kvmgpu:gmem unit='MiB'>8192")
    node = tmp_path / "node.xml"
    node.write_text(f"<node>{domain(meta, 'edited')}</node>")
    return f"test://{node}"


def test_attach_on_edited_metadata_is_an_error_naming_the_field(tmp_path, edited):
    r = _cli(tmp_path, "attach", "edited", "--gmem", "1G", "--connect", edited)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith(EDITED), r.stderr
    assert not (tmp_path / "run").exists()            # refused before the channel directory was made


def test_list_says_which_domain_it_leaves_out_and_why(tmp_path, edited):
    r = _cli(tmp_path, "list", "--json", "--connect", edited)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]" and r.stderr.startswith(EDITED.replace("error:", "warning:", 1)), r.stderr


def test_detach_takes_out_edited_metadata(tmp_path, edited):
    r = _cli(tmp_path, "detach", "edited", "--json", "--connect", edited)
    assert r.returncode == 0 and '"changed": true' in r.stdout, r.stdout + r.stderr
