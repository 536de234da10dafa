"""The pure XML layer: templates (golden files), schema validity, editing in place."""

from __future__ import annotations

import pytest

from kvmgpu.domain import xml
from kvmgpu.errors import InvalidInput
from kvmgpu.vgpu import VGpu, region_path

VGPU = VGpu(id="6f1c7f7e-2b1e-4d3c-9a55-0d1f2e3c4b5a", vm="vm01", gpu=1,
            gpu_uuid="GPU-830ca514-062e-5d80-8770-ebc50789eb16", gmem=8 << 30, compute=50,
            compute_mode="limit", region_size=256 << 20)
SAMPLE = xml.template_text("sample-domain.xml")


def sample():
    return xml.parse(SAMPLE.split("-->", 1)[1].strip())


def test_shmem_golden(golden):
    golden("shmem.xml", xml.render_shmem("vm01", 256 << 20))


def test_channel_golden(golden):
    golden("channel.xml", xml.render_channel("/run/kvmgpu/vm01.sock"))


def test_metadata_golden(golden):
    golden("metadata.xml", xml.render_metadata(VGPU))


def test_metadata_with_added_controllers_golden(golden):
    golden("metadata-added-controllers.xml", xml.render_metadata(
        VGPU, (xml.Controller("pci", 4, "pcie-root-port"), xml.Controller("virtio-serial", 0))))


def test_sample_domain_with_vgpu_golden_and_valid(golden, validate):
    root = sample()
    xml.apply_vgpu(root, VGPU, "/run/kvmgpu/vm01.sock")
    text = xml.to_string(root) + "\n"
    golden("sample-domain-attached.xml", text)
    validate(text)


def test_sample_domain_is_valid(validate):
    validate(SAMPLE)


def test_every_fragment_is_valid_in_a_domain(validate):
    devices = xml.render_shmem("vm01", 1 << 30) + xml.render_channel("/run/kvmgpu/vm01.sock")
    meta = xml.render_metadata(VGPU, (xml.Controller("pci", 4, "pcie-root-port"),))
    text = SAMPLE.replace("</devices>", devices + "</devices>").replace(
        "<memory", f"<metadata>{meta}</metadata><memory")
    validate(text)


def test_read_vgpu_round_trip():
    root = sample()
    assert xml.read_vgpu(root) is None
    xml.apply_vgpu(root, VGPU, "/run/kvmgpu/vm01.sock")
    got = xml.read_vgpu(xml.to_string(root))
    assert got == VGpu(**{**VGPU.__dict__, "vm": "kvmgpu-sample"})


def test_remove_restores_the_document_exactly():
    before = xml.to_string(sample())
    root = sample()
    xml.apply_vgpu(root, VGPU, "/run/kvmgpu/vm01.sock")
    assert xml.to_string(root) != before
    assert xml.remove_vgpu(root)
    assert xml.to_string(root) == before
    assert not xml.remove_vgpu(root)


def test_update_edits_in_place_and_keeps_addresses():
    root = sample()
    xml.apply_vgpu(root, VGPU, "/run/kvmgpu/vm01.sock")
    shmem = xml.find_shmem(root)[0]
    shmem.append(xml._fragment("<address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>"))
    bigger = VGpu(**{**VGPU.__dict__, "region_size": 512 << 20, "gmem": 4 << 30})
    xml.apply_vgpu(root, bigger, "/run/kvmgpu/vm01.sock")
    assert len(xml.find_shmem(root)) == 1 and len(xml.find_channel(root)) == 1
    assert xml.find_shmem(root)[0].find("address").get("slot") == "0x04"
    assert xml.find_shmem(root)[0].findtext("size") == "512"
    assert xml.read_vgpu(root).gmem == 4 << 30


def test_foreign_metadata_and_channels_are_kept():
    text = SAMPLE.split("-->", 1)[1].replace(
        "<vcpu>", "<metadata><app:x xmlns:app='http://example.com/app'>keep</app:x></metadata><vcpu>").replace(
        "</devices>", "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel></devices>")
    root = xml.parse(text.strip())
    before = xml.to_string(root)
    xml.apply_vgpu(root, VGPU, "/run/kvmgpu/vm01.sock")
    assert "http://example.com/app" in xml.to_string(root)
    xml.remove_vgpu(root)
    assert xml.to_string(root) == before


def test_unused_added_controllers_go_used_ones_stay():
    root = xml.parse("""<domain type='qemu'><name>d</name><devices>
    <controller type='virtio-serial' index='0'/>
    <controller type='pci' index='4' model='pcie-root-port'/>
    <interface type='user'><address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/></interface>
  </devices></domain>""")
    xml.apply_vgpu(root, VGPU, "/s",
                   added=(xml.Controller("virtio-serial", 0), xml.Controller("pci", 4, "pcie-root-port")))
    xml.remove_vgpu(root)
    assert xml.controllers(root) == {xml.Controller("pci", 4, "pcie-root-port")}


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", "has space", "x" * 65, "ü"])
def test_names_kvmgpu_cannot_use(name):
    with pytest.raises(InvalidInput):
        xml.check_vm_name(name)


def test_region_path():
    assert region_path("vm01") == "/dev/shm/kvmgpu-vm01"


def test_unreadable_metadata_is_an_error():
    text = SAMPLE.split("-->", 1)[1].replace(
        "<vcpu>", f"<metadata><kvmgpu:vgpu xmlns:kvmgpu='{xml.NS}' id='x'/></metadata><vcpu>")
    with pytest.raises(InvalidInput):
        xml.read_vgpu(text.strip())
