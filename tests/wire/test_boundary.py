"""The wire format is the one package both sides share: the host's code imports kvmgpu_wire, never
the guest agent's internals, and kvmgpu_wire imports nothing of either side."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The host's modules that run the guest agent as a guest (a loopback benchmark), and so import it.
RUNS_THE_GUEST = {"kvmgpu/bench.py", "kvmgpu/benchgpu.py"}


def imported(path: Path) -> set[str]:
    """The top-level packages `path` imports (absolute imports, anywhere in the module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_host_imports_the_wire_format_not_the_guest():
    offenders = [str(p.relative_to(REPO)) for p in sorted((REPO / "kvmgpu").rglob("*.py"))
                 if "kvmgpu_guest" in imported(p) and str(p.relative_to(REPO)) not in RUNS_THE_GUEST]
    assert offenders == [], f"host modules importing kvmgpu_guest (import kvmgpu_wire instead): {offenders}"


def test_the_wire_format_imports_neither_side():
    for p in sorted((REPO / "guest-agent" / "kvmgpu_wire").glob("*.py")):
        assert not imported(p) & {"kvmgpu", "kvmgpu_guest"}, p
