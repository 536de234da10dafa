"""kvmgpu's elements in a libvirt domain's XML, and nothing else.

Pure: no libvirt calls, no policy. Functions render kvmgpu's device fragments from the templates
in xml-templates/ and its metadata from its declaration (metadata.py), read a vGPU from a domain's
<metadata>, and add or remove kvmgpu's elements on a parsed domain in place, so everything kvmgpu
does not own is left as it was.

kvmgpu owns, in a domain:
  - <devices>/<shmem name='kvmgpu-VM'> (ivshmem-plain: the data region, /dev/shm/kvmgpu-VM)
  - <devices>/<channel type='unix'> whose <target type='virtio' name='org.kvmgpu.0'/> (control)
  - <metadata>/<kvmgpu:vgpu xmlns:kvmgpu='http://kvmgpu.org/xmlns/vgpu/1'> (the assignment)
  - the controllers libvirt added when kvmgpu's devices first went in, recorded in the metadata
    as <kvmgpu:added-controller/> so that detach can take them out again.
"""

from __future__ import annotations

import importlib.resources
import re

import jinja2
from lxml import etree

from ..errors import InvalidInput
from ..vgpu import CHANNEL_NAME, REGION_PREFIX, VGpu, region_name
from . import metadata
from .metadata import NS, PREFIX, Controller  # noqa: F401  (callers name them xml.NS, xml.Controller)


def template_text(name: str) -> str:
    """The text of xml-templates/<name>, read from the package kvmgpu.xml_templates (a source
    tree's editable install and a wheel's copy alike)."""
    try:
        return importlib.resources.files("kvmgpu.xml_templates").joinpath(name).read_text()
    except FileNotFoundError:
        raise jinja2.TemplateNotFound(name) from None


_VM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_Q = f"{{{NS}}}"

_env = jinja2.Environment(loader=jinja2.FunctionLoader(template_text),
                          autoescape=True, undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=False)


# -- rendering ---------------------------------------------------------------------------------

def render(template: str, **values) -> str:
    return _env.get_template(template).render(**values).strip() + "\n"


def render_shmem(vm: str, region_size: int) -> str:
    return render("shmem.xml.j2", name=region_name(vm), size_mib=region_size >> 20)


def render_channel(path: str) -> str:
    return render("channel.xml.j2", path=path, target=CHANNEL_NAME)


def render_metadata(vgpu: VGpu, added_controllers: tuple[Controller, ...] = ()) -> str:
    """kvmgpu's <metadata> element (declared in metadata.py). A value that could not be read back
    is refused (InvalidInput naming the field) before anything is written."""
    try:
        return metadata.render(vgpu, added_controllers)
    except metadata.MetadataError as e:
        raise InvalidInput(f"cannot record {vgpu.vm!r}'s vGPU: {e}") from None


# -- checks ------------------------------------------------------------------------------------

def check_vm_name(vm: str) -> None:
    """A VM name kvmgpu can put in a path, a shmem name and a socket name."""
    if not _VM_NAME.match(vm or "") or len(vm) > 64:
        raise InvalidInput(
            f"VM name {vm!r} cannot be used by kvmgpu",
            "kvmgpu names files after the VM (/dev/shm/kvmgpu-VM, CHANNEL_DIR/VM.sock): use letters, "
            "digits, '.', '_', '+', '-', starting with a letter or digit, at most 64 characters")


# -- parsing -----------------------------------------------------------------------------------

def parse(domain_xml: str) -> etree._Element:
    try:
        return etree.fromstring(domain_xml.encode(), etree.XMLParser(remove_blank_text=False))
    except etree.XMLSyntaxError as e:
        raise InvalidInput(f"domain XML does not parse: {e}") from None


def to_string(root: etree._Element) -> str:
    return etree.tostring(root, encoding="unicode")


def vm_name(root: etree._Element) -> str:
    return root.findtext("name") or ""


def _unreadable(root, e: metadata.MetadataError) -> InvalidInput:
    vm = vm_name(root)
    return InvalidInput(f"domain {vm!r} has kvmgpu metadata that cannot be read: {e}",
                        f"see `virsh dumpxml --inactive {vm}`; fix it with `virsh edit {vm}`, "
                        f"or `kvmgpu detach {vm}` removes it")


def read_vgpu(domain_xml: str | etree._Element) -> VGpu | None:
    """The vGPU recorded in a domain's metadata, or None when it has none. InvalidInput, naming
    the field and what is wrong with it, for metadata that cannot be read."""
    root = parse(domain_xml) if isinstance(domain_xml, str) else domain_xml
    el = metadata.find(root)
    if el is None:
        return None
    try:
        return metadata.read(el, vm_name(root))
    except metadata.MetadataError as e:
        raise _unreadable(root, e) from None


def added_controllers(root) -> tuple[Controller, ...]:
    """The controllers the metadata says libvirt added for kvmgpu's devices."""
    el = metadata.find(root)
    if el is None:
        return ()
    try:
        return metadata.read_added_controllers(el)
    except metadata.MetadataError as e:
        raise _unreadable(root, e) from None


def controllers(root) -> set[Controller]:
    devices = root.find("devices")
    if devices is None:
        return set()
    return {Controller(c.get("type"), int(c.get("index", "0")), c.get("model"))
            for c in devices.findall("controller")}


def find_shmem(root):
    return [s for s in root.iterfind("devices/shmem") if (s.get("name") or "").startswith(REGION_PREFIX)]


def find_channel(root):
    return [c for c in root.iterfind("devices/channel")
            if c.find("target") is not None and c.find("target").get("name") == CHANNEL_NAME]


# -- editing -----------------------------------------------------------------------------------

def _fragment(text: str):
    return etree.fromstring(text.encode())


def _indent(el, depth: int) -> None:
    """Re-indent a fresh fragment to sit at `depth` (2 spaces a level, as libvirt writes)."""
    etree.indent(el, space="  ", level=depth)


def _insert(parent, el, depth: int, after=None) -> None:
    """Insert `el` as a child of `parent` (after `after`, else last), keeping the indentation."""
    _indent(el, depth)
    pad, close = "\n" + "  " * depth, "\n" + "  " * (depth - 1)
    if after is not None:
        el.tail = after.tail
        after.tail = pad
        after.addnext(el)
        return
    if len(parent):
        last = parent[-1]
        el.tail, last.tail = last.tail, pad
        parent.append(el)
    else:
        parent.text = pad
        parent.append(el)
        el.tail = close


def _remove(el) -> None:
    """Remove `el`, giving its tail to whatever came before it so the layout stays as it was."""
    parent, prev = el.getparent(), el.getprevious()
    if prev is not None:
        prev.tail = el.tail
    else:
        parent.text = el.tail if len(parent) > 1 else (parent.text if el.tail is None else None)
    parent.remove(el)


def _devices(root):
    devices = root.find("devices")
    if devices is None:
        devices = etree.Element("devices")
        _insert(root, devices, 1)
    return devices


def apply_vgpu(root, vgpu: VGpu, channel: str,
               added: tuple[Controller, ...] | None = None) -> None:
    """Give the parsed domain `root` kvmgpu's elements for `vgpu`, editing existing ones in place
    (so their addresses stay) and adding those that are missing. `channel` is the socket path.
    `added` replaces the recorded added-controllers; None keeps what is recorded."""
    if added is None:
        added = added_controllers(root)
    fresh = _fragment(render_metadata(vgpu, added))   # refuses bad values before anything changes
    devices = _devices(root)

    shmems = find_shmem(root)
    if shmems:
        for extra in shmems[1:]:
            _remove(extra)
        shmem = shmems[0]
        shmem.set("name", region_name(vgpu.vm))
        size = shmem.find("size")
        if size is None:
            size = etree.SubElement(shmem, "size")
        size.set("unit", "M")
        size.text = str(vgpu.region_size >> 20)
    else:
        _insert(devices, _fragment(render_shmem(vgpu.vm, vgpu.region_size)), 2)

    channels = find_channel(root)
    if channels:
        for extra in channels[1:]:
            _remove(extra)
        source = channels[0].find("source")
        source.set("mode", "bind")
        source.set("path", channel)
    else:
        last = root.findall("devices/channel")
        _insert(devices, _fragment(render_channel(channel)), 2, after=last[-1] if last else None)

    meta = root.find("metadata")
    if meta is None:
        meta = etree.Element("metadata")
        after = None
        for tag in ("description", "title", "uuid", "genid", "name"):  # libvirt's order
            after = root.find(tag)
            if after is not None:
                break
        _insert(root, meta, 1, after=after)
    old = meta.find(f"{_Q}vgpu")
    if old is not None and _same(old, fresh):
        return
    if old is not None:
        _indent(fresh, 2)
        fresh.tail = old.tail
        old.getparent().replace(old, fresh)
    else:
        _insert(meta, fresh, 2)


def _same(a, b) -> bool:
    return etree.tostring(a, method="c14n") == etree.tostring(_reindented(b, a), method="c14n")


def _reindented(fresh, like):
    copy = etree.fromstring(etree.tostring(fresh))
    _indent(copy, 2)
    copy.tail = like.tail
    return copy


def _referenced(root, c: Controller) -> bool:
    """Whether any device's <address> names controller `c` (pci: by bus; others: by controller)."""
    for addr in root.iterfind("devices//address"):
        if addr.getparent().tag == "controller" and addr.getparent().get("type") == c.type \
                and int(addr.getparent().get("index", "0")) == c.index:
            continue
        if c.type == "pci" and addr.get("type") == "pci":
            if int(addr.get("bus", "0"), 0) == c.index:
                return True
        elif c.type != "pci" and addr.get("type") == c.type and int(addr.get("controller", "0")) == c.index:
            return True
    return False


def remove_vgpu(root) -> bool:
    """Take kvmgpu's elements out of the parsed domain `root`: its devices, its metadata, and the
    controllers recorded as added for them that nothing else uses. False when there was nothing.
    Unreadable metadata is removed too; the controllers it names are then left in place."""
    try:
        added = added_controllers(root)
    except InvalidInput:
        added = ()
    found = False
    for el in find_shmem(root) + find_channel(root):
        _remove(el)
        found = True
    meta = root.find("metadata")
    if meta is not None and meta.find(f"{_Q}vgpu") is not None:
        _remove(meta.find(f"{_Q}vgpu"))
        found = True
        if len(meta) == 0:
            _remove(meta)
    remaining = list(added)
    while remaining:  # a bridge may hold up the root port it sits on: repeat until nothing goes
        gone = []
        for c in remaining:
            for el in root.iterfind("devices/controller"):
                if Controller(el.get("type"), int(el.get("index", "0")), el.get("model")) == c \
                        and not _referenced(root, c):
                    _remove(el)
                    gone.append(c)
                    break
        if not gone:
            break
        remaining = [c for c in remaining if c not in gone]
    return found
