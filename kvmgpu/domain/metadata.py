"""kvmgpu's element in a domain's <metadata>, declared once.

Each field of the assignment is declared here with its place in the XML, its type, its unit and its
check; rendering and reading are both driven by the declaration (as virtinst's XMLProperty and
nova's config objects do), so a field added here is written and read alike, and a value kvmgpu
would refuse to read is never written. Pure: no libvirt calls, no policy.

    <kvmgpu:vgpu xmlns:kvmgpu='http://kvmgpu.org/xmlns/vgpu/1' id='UUID'>
      <kvmgpu:gpu index='1' uuid='GPU-...'/>
      <kvmgpu:gmem unit='bytes'>8589934592</kvmgpu:gmem>
      <kvmgpu:compute mode='limit'>50</kvmgpu:compute>
      <kvmgpu:region unit='bytes'>268435456</kvmgpu:region>
      <kvmgpu:added-controller type='pci' index='4' model='pcie-root-port'/>   (0 or more)
    </kvmgpu:vgpu>

The text rendered is the one the earlier jinja2 template (xml-templates/metadata.xml.j2) wrote,
byte for byte (single quotes, two-space indentation); tests/domain/samples/ holds domains written
then. Elements and attributes not declared here are ignored when read (and not written again).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ..vgpu import COMPUTE_MODES, VGpu

NS = "http://kvmgpu.org/xmlns/vgpu/1"
PREFIX = "kvmgpu"
_Q = f"{{{NS}}}"


@dataclass(frozen=True)
class Controller:
    """A <controller> by its identity: type, index and (for pci) model."""
    type: str
    index: int
    model: str | None = None


class MetadataError(ValueError):
    """A field's value in the XML (or one about to be written) that kvmgpu cannot use."""

    def __init__(self, record: Record, field: Field, problem: str):
        super().__init__(f"{field.name} ({record.where(field)}, {field.what}): {problem}")
        self.field = field


# -- checks: each returns what is wrong with a value, or None -----------------------------------

def _uuid(v: str) -> str | None:
    try:
        uuid.UUID(v)
    except ValueError:
        return f"{v!r} is not a UUID"
    return None


def _gpu_uuid(v: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]*", v) else f"{v!r} is not a GPU uuid (GPU-...)"


def _at_least(low: int) -> Callable[[int], str | None]:
    return lambda v: None if v >= low else f"{v} is less than {low}"


def _within(low: int, high: int) -> Callable[[int], str | None]:
    return lambda v: None if low <= v <= high else f"{v} is not from {low} to {high}"


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str | None]:
    return lambda v: None if v in choices else f"{v!r} is not one of {', '.join(choices)}"


def _positive(v: int) -> str | None:
    return None if v > 0 else f"{v} is not more than zero"


def _region(v: int) -> str | None:
    return None if v >= 1 << 20 and not v & (v - 1) else f"{v} is not a power of two of at least 1 MiB"


def _name(v: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v) else f"{v!r} is not a name"


# -- the declaration ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """One value of a record: `at` is where it lives in the record's element: "@id" an attribute
    of the element itself, "gpu@index" an attribute of its child <kvmgpu:gpu>, "gmem" the text of
    its child <kvmgpu:gmem> (which then carries unit='`unit`' when a unit is given)."""
    name: str                               # the record's attribute
    at: str
    kind: type                              # int or str
    what: str                               # words for errors
    check: Callable[[Any], str | None]
    unit: str | None = None
    optional: bool = False                  # absent: None; None is not written

    @property
    def element(self) -> str:
        return self.at.partition("@")[0]

    @property
    def attribute(self) -> str | None:
        return self.at.partition("@")[2] or None


@dataclass(frozen=True)
class Record:
    """An element of kvmgpu's namespace and the fields of the dataclass it stands for."""
    tag: str
    fields: tuple[Field, ...]

    def where(self, field: Field) -> str:
        """Where `field` is, as a reader of the XML sees it: <kvmgpu:gpu index=...>."""
        tag = f"{PREFIX}:{field.element or self.tag}"
        return f"<{tag} {field.attribute}=...>" if field.attribute else f"<{tag}>"

    def children(self) -> list[str]:
        """The child elements, in the order they are written: that of their first field."""
        return list(dict.fromkeys(f.element for f in self.fields if f.element))


VGPU = Record("vgpu", (
    Field("id", "@id", str, "the vGPU's id", _uuid),
    Field("gpu", "gpu@index", int, "the GPU's index on this host", _at_least(0)),
    Field("gpu_uuid", "gpu@uuid", str, "the GPU's uuid", _gpu_uuid),
    Field("gmem", "gmem", int, "the memory quota", _positive, unit="bytes"),
    Field("compute_mode", "compute@mode", str, "the compute mode", _one_of(COMPUTE_MODES)),
    Field("compute", "compute", int, "the compute share in percent", _within(1, 100)),
    Field("region_size", "region", int, "the shared region's size", _region, unit="bytes"),
))
ADDED_CONTROLLER = Record("added-controller", (
    Field("type", "@type", str, "a controller libvirt added", _name),
    Field("index", "@index", int, "a controller libvirt added", _at_least(0)),
    Field("model", "@model", str, "a controller libvirt added", _name, optional=True),
))
assert {f.name for f in VGPU.fields} == {f.name for f in fields(VGpu)} - {"vm"}, "VGPU declares every VGpu field"


# -- rendering ------------------------------------------------------------------------------------

def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&#39;").replace('"', "&#34;"))


def _value(record: Record, field: Field, value: object) -> str | None:
    if value is None and field.optional:
        return None
    if not isinstance(value, field.kind) or isinstance(value, bool):
        kind = "an integer" if field.kind is int else "a string"
        raise MetadataError(record, field, f"{value!r} is not {kind}")
    problem = field.check(value)
    if problem:
        raise MetadataError(record, field, problem)
    return str(value)


def _tag(record: Record, element: str, values: dict[Field, str | None], close: bool,
         first: str = "") -> str:
    mine = [f for f in record.fields if f.element == element]
    attrs = first + "".join(f" {f.attribute}='{_escape(value)}'"
                            for f in mine if f.attribute and (value := values[f]) is not None)
    text = next((f for f in mine if not f.attribute), None)
    if text is not None and text.unit:
        attrs += f" unit='{text.unit}'"
    name = f"{PREFIX}:{element or record.tag}"
    if text is not None:
        return f"<{name}{attrs}>{_escape(values[text] or '')}</{name}>"
    return f"<{name}{attrs}>" if not close else f"<{name}{attrs}/>"


def render(vgpu: VGpu, added_controllers: tuple[Controller, ...] = ()) -> str:
    """The <kvmgpu:vgpu> element for `vgpu` (its `vm` is the domain's name, not written here).
    Raises MetadataError, naming the field, for a value that could not be read back."""
    values = {f: _value(VGPU, f, getattr(vgpu, f.name)) for f in VGPU.fields}
    lines = [_tag(VGPU, "", values, close=False, first=f" xmlns:{PREFIX}='{NS}'")]
    lines += ["  " + _tag(VGPU, child, values, close=True) for child in VGPU.children()]
    for c in added_controllers:
        cv = {f: _value(ADDED_CONTROLLER, f, getattr(c, f.name)) for f in ADDED_CONTROLLER.fields}
        lines.append("  " + _tag(ADDED_CONTROLLER, "", cv, close=True))
    return "\n".join(lines + [f"</{PREFIX}:{VGPU.tag}>"]) + "\n"


# -- reading --------------------------------------------------------------------------------------

def _read_field(record: Record, field: Field, el) -> Any:
    node = el
    if field.element:
        found = el.findall(f"{_Q}{field.element}")
        if len(found) != 1:
            raise MetadataError(record, field, "missing" if not found else f"written {len(found)} times")
        node = found[0]
    raw = node.get(field.attribute) if field.attribute else node.text
    if raw is None:
        if field.optional:
            return None
        raise MetadataError(record, field, "missing")
    if field.unit is not None and node.get("unit") != field.unit:
        raise MetadataError(record, field, f"unit {node.get('unit')!r} is not {field.unit!r}")
    raw = raw.strip()
    if field.kind is int:
        if not re.fullmatch(r"-?[0-9]+", raw):
            raise MetadataError(record, field, f"{raw!r} is not a whole number")
        value: Any = int(raw)
    else:
        value = raw
    problem = field.check(value)
    if problem:
        raise MetadataError(record, field, problem)
    return value


def read(el, vm: str) -> VGpu:
    """The vGPU in a parsed <kvmgpu:vgpu> element of domain `vm`. Raises MetadataError, naming
    the field and what is wrong with it."""
    return VGpu(vm=vm, **{f.name: _read_field(VGPU, f, el) for f in VGPU.fields})


def read_added_controllers(el) -> tuple[Controller, ...]:
    """The controllers a parsed <kvmgpu:vgpu> element says libvirt added for kvmgpu's devices."""
    return tuple(Controller(**{f.name: _read_field(ADDED_CONTROLLER, f, c) for f in ADDED_CONTROLLER.fields})
                 for c in el.findall(f"{_Q}{ADDED_CONTROLLER.tag}"))


def find(root):
    """The <kvmgpu:vgpu> element in a parsed domain's <metadata>, or None."""
    meta = root.find("metadata")
    return None if meta is None else meta.find(f"{_Q}{VGPU.tag}")
