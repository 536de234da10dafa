"""The test guest boots under libvirt (TCG), sees kvmgpu's channel and shared memory, and both
directions work. Marked vm: needs qemu:///system (skipped when unreachable)."""
import os
import pwd
import stat
import uuid
from pathlib import Path

import pytest

from guestvm import GuestVM, channel_xml, render_domain, shmem_xml

pytestmark = pytest.mark.vm
HERE = Path(__file__).resolve().parent


def _kv(console: str) -> dict:
    out = {}
    for line in console.splitlines():
        if "=" in line and line.split("=", 1)[0].isupper():
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _owner(path: Path) -> str:
    st = os.stat(path)
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    return f"{user}:{st.st_gid} {stat.filemode(st.st_mode)}"


def test_template_validates(tmp_path):
    import shutil
    import subprocess
    if not shutil.which("virt-xml-validate"):
        pytest.skip("virt-xml-validate not installed (Debian: libvirt-clients)")
    for domain_type in ("qemu", "kvm"):
        xml = render_domain(name="kvmgpu-vmtest-validate", kernel="/k", initrd="/i", console_log="/c.log",
                            domain_type=domain_type, cmdline="kvmgpu.stay=1",
                            extra_devices=[shmem_xml("kvmgpu-x"), channel_xml("/run/kvmgpu/x.sock")])
        p = tmp_path / f"d-{domain_type}.xml"
        p.write_text(xml)
        r = subprocess.run(["virt-xml-validate", str(p), "domain"], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr + xml
        assert "ivshmem-plain" in xml and "org.kvmgpu.0" in xml


def test_guest_channel_and_shmem(guest_vm: GuestVM, capsys):
    token = f"host-{uuid.uuid4().hex[:12]}"
    shm = guest_vm.add_shmem(initial=token.encode() + b"\0")
    sock_path = guest_vm.add_channel()
    guest_vm.start("python3 /payload/guest_checks.py", files={"guest_checks.py": HERE / "guest_checks.py"})
    perms = {"shm": _owner(shm)}
    s = guest_vm.connect_channel(sock_path, timeout=30)
    perms["socket"] = _owner(sock_path)
    s.settimeout(45)
    try:
        s.sendall(f"ping-{token}\n".encode())
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(4096)
            assert chunk, "channel closed before the guest answered:\n" + guest_vm.console()
            buf += chunk
        reply = buf.split(b"\n", 1)[0].decode()
        s.sendall(b"bye\n")
    except TimeoutError as e:
        raise AssertionError("no echo from the guest:\n" + guest_vm.console()) from e
    finally:
        s.close()
    res = guest_vm.wait(timeout=45)
    kv = _kv(res.console)
    with capsys.disabled():
        print(f"\n[vm] boot {res.boot_s}s (guest uptime at init done), wall {res.wall_s:.1f}s, "
              f"perms {perms}, port {kv.get('PORT_SYSFS')} link {kv.get('PORT_LINK')}, "
              f"ivshmem {kv.get('IVSHMEM')}")
    assert res.exit_code == 0, res.console
    # (a) the port, both ways of finding it
    assert kv["PORT_SYSFS"].startswith("/dev/vport"), res.console
    assert kv["PORT_LINK"] == kv["PORT_SYSFS"], res.console
    # (b) both directions over the host socket
    assert kv["CHANNEL_GOT"] == f"ping-{token}"
    assert reply == f"echo:ping-{token}"
    # (c) shared memory, both directions
    assert kv["BAR2_SIZE"] == str(256 << 20)
    assert kv["SHM_HOST"] == token, res.console
    with open(shm, "rb") as f:
        f.seek(4096)
        assert f.read(len(token) + 10) == f"guest-saw:{token}".encode()


def test_guest_runs_payload_and_agent_cli(guest_vm: GuestVM):
    res = guest_vm.run("echo payload-ran; python3 -c 'import kvmgpu_guest, sys; print(\"agent-import\", "
                       "kvmgpu_guest.__file__)'; test -x /usr/bin/kvmgpu-guest && echo launcher-ok; exit 3",
                       timeout=45)
    assert "payload-ran" in res.console
    assert "agent-import /usr/lib/python3/dist-packages/kvmgpu_guest/__init__.py" in res.console, res.console
    assert "launcher-ok" in res.console
    assert res.exit_code == 3
