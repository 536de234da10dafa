"""Only kvmgpu/domain/ calls libvirt (docs/architecture.md): host.py (domains, connections) and
events.py (the daemon's event connection). Everything else asks them, with a connection they
opened; xml.py and metadata.py stay pure."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import libvirt

PACKAGE = Path(__file__).resolve().parents[2] / "kvmgpu"
LIBVIRT_CALLERS = {"domain/host.py", "domain/events.py"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path))


def _imports_libvirt(tree) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name)) \
                and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__"):
            names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        else:
            continue
        if any(n.split(".")[0].startswith("libvirt") for n in names):
            lines.append(node.lineno)
    return lines


def _libvirt_method_names() -> set[str]:
    """The camelCase methods of libvirt's classes (virConnect.listAllDomains, virDomain.XMLDesc, ...):
    a call of one outside the boundary is a libvirt call on an object the boundary handed out."""
    names = set()
    for cname in dir(libvirt):
        cls = getattr(libvirt, cname)
        if isinstance(cls, type) and cname.startswith("vir"):
            names |= {n for n in dir(cls) if not n.startswith("_") and re.search(r"[a-z][A-Z]|^[A-Z]+[a-z]", n)}
    return names


def test_only_the_domain_layer_imports_libvirt():
    importers = {name: lines for name, tree in _modules() if (lines := _imports_libvirt(tree))}
    outside = {name: lines for name, lines in importers.items() if name not in LIBVIRT_CALLERS}
    assert not outside, (f"libvirt imported outside {sorted(LIBVIRT_CALLERS)} (file: lines): {outside}; "
                         "put the call behind kvmgpu/domain/host.py or events.py")
    assert set(importers) == LIBVIRT_CALLERS


def test_no_libvirt_method_is_called_outside_the_domain_layer():
    methods = _libvirt_method_names()
    assert {"listAllDomains", "XMLDesc", "lookupByName", "domainEventRegisterAny", "isActive"} <= methods
    found = {}
    for name, tree in _modules():
        if name in LIBVIRT_CALLERS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in methods:
                found.setdefault(name, []).append(f"{node.attr} (line {node.lineno})")
    assert not found, f"libvirt methods called outside kvmgpu/domain/host.py and events.py: {found}"
