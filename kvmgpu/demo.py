"""`make demo`: a VM with no GPU runs CUDA work on the host's vGPU, under its quota.

Runs, and prints, the commands an operator would type: build the small demo guest, define it,
`kvmgpu attach` a vGPU with a memory quota and a compute share, start the kvmgpu daemon, `virsh
start` the VM, and show what the guest printed (`kvmgpu-guest info`, a checked vector_add, an
allocation past the quota that is refused, and, where this machine has nvcc, a CUDA C program built
by it running on NVIDIA's runtime and the guest's libcuda.so.1). The cuda backend is used where the
host has an NVIDIA GPU, the sim development backend otherwise.

It works from a source checkout (it uses guest-agent/image, tests/kernels and tests/guest/programs).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE_DIR = REPO / "guest-agent" / "image"
EXAMPLES = REPO / "guest-agent" / "examples"
PTX = REPO / "tests" / "kernels" / "kernels.ptx"
WORK = Path("/var/lib/kvmgpu/demo")  # kernel, initrd, console log: QEMU's user must read them
VM = "kvmgpu-demo"
URI = "qemu:///system"
SIM_GPUS = "1x16G"
DESCRIPTION = "kvmgpu demo guest (make demo)"

GUEST_SCRIPT = """\
echo '--- kvmgpu-guest info'
kvmgpu-guest info
echo '--- kvmgpu-guest run -- python3 vector_demo.py'
kvmgpu-guest run -- python3 /payload/vector_demo.py /payload/kernels.ptx
if [ -x /payload/vector_add_runtime ]; then
  echo '--- kvmgpu-guest run -- ./vector_add_runtime   (CUDA C, nvcc-built, NVIDIA runtime linked static)'
  kvmgpu-guest run -- /payload/vector_add_runtime
  echo "CUDA-C-EXIT $?"
fi
"""


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say(f"\n== {title}")


def sh(cmd: list[str], env=None, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
    """Run a command the way the reader would, showing it and its output."""
    say("$ " + " ".join(shlex.quote(c) for c in cmd))
    proc = subprocess.run(cmd, env=env, text=True, capture_output=True)
    out = (proc.stdout + proc.stderr).rstrip()
    if out and not quiet:
        say("  " + out.replace("\n", "\n  "))
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: `{cmd[0]} {cmd[1] if len(cmd) > 1 else ''}` failed (exit {proc.returncode})")
    return proc


def kvmgpu_bin() -> str:
    return str(Path(sys.executable).with_name("kvmgpu"))


def choose_backend(env: dict) -> str:
    """'cuda' when NVML sees an NVIDIA GPU, else 'sim' with simulated GPUs declared in `env`."""
    try:
        import pynvml
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
        if count:
            return "cuda"
    except Exception:
        pass
    env.setdefault("KVMGPU_SIM_GPUS", SIM_GPUS)
    return "sim"


def build_guest(work: Path) -> tuple[Path, Path, bool]:
    """The demo guest's kernel and initrd (with the payload), and whether the payload has the CUDA
    C program (built where nvcc is)."""
    sys.path.insert(0, str(IMAGE_DIR))
    import build_image  # guest-agent/image: the builder the tests use too

    image = build_image.build(log=lambda msg: say(f"  {msg}"))
    work.mkdir(parents=True, exist_ok=True)
    kernel = work / "vmlinuz"
    kernel.write_bytes(Path(image.kernel).read_bytes())
    files = {"vector_demo.py": EXAMPLES / "vector_demo.py", "kernels.ptx": PTX}
    program = build_image.cuda_program(log=lambda msg: say(f"  {msg}"))  # None without nvcc
    if program is not None:
        files["vector_add_runtime"] = program
    initrd = build_image.initrd_with_payload(image, work / "initrd-demo.img", GUEST_SCRIPT, files)
    return kernel, initrd, program is not None


def domain_xml(kernel: Path, initrd: Path, console_log: Path) -> str:
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(REPO / "xml-templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    xml = env.get_template("guest-vm.xml.j2").render(
        name=VM, uuid=None, kernel=kernel, initrd=initrd, console_log=console_log,
        domain_type="qemu", memory_mib=512, vcpus=1, cmdline="", emulator=None, extra_devices=[])
    return xml.replace("kvmgpu test guest (guest-agent/image)", DESCRIPTION)


def remove_old_demo(conn) -> None:
    from .domain import host
    from .errors import NotFound
    try:
        dom = host.lookup(conn, VM)
    except NotFound:
        return
    if DESCRIPTION not in host.inactive_xml(dom):
        raise SystemExit(f"demo: a domain named {VM} exists and is not the demo's; rename or remove it")
    if host.is_active(conn, VM):
        sh(["virsh", "-c", URI, "destroy", VM])
    sh(["virsh", "-c", URI, "undefine", VM])


def daemon_running() -> bool:
    from .config import load_config
    from .daemon import api
    from .errors import KvmgpuError
    try:
        api.query(load_config(), {"op": "status"})
        return True
    except KvmgpuError:
        return False


def wait_shut_off(conn, timeout: float) -> bool:
    from .domain import host
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not host.is_active(conn, VM):
            return True
        time.sleep(0.5)
    return False


def guest_lines(console: str) -> list[str]:
    """What the payload printed: the console from the first payload line, kernel noise dropped."""
    lines = console.replace("\r", "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("--- kvmgpu-guest")), 0)
    return [line for line in lines[start:] if not re.match(r"^\[\s*\d+\.\d+\]", line)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gmem", default="1G", help="the demo vGPU's memory quota (default 1G)")
    ap.add_argument("--compute", default="50", help="its compute share in percent (default 50)")
    ap.add_argument("--timeout", type=float, default=240, help="seconds to wait for the guest")
    args = ap.parse_args(argv)

    from .domain import host
    from .errors import KvmgpuError
    env = dict(os.environ)
    backend = choose_backend(env)
    say(f"kvmgpu demo: backend {backend}" + ("" if backend == "cuda" else
        f" (no NVIDIA GPU here: simulated GPUs KVMGPU_SIM_GPUS={env['KVMGPU_SIM_GPUS']}, "
        "the sim development backend)"))

    step("build the demo guest (a Debian kernel + an initramfs with python3 and kvmgpu-guest)")
    kernel, initrd, with_cuda_c = build_guest(WORK)
    console_log = WORK / "console.log"
    console_log.unlink(missing_ok=True)

    step(f"define the VM {VM} (no GPU, no disk; TCG, see docs/guest-image.md)")
    try:
        conn = host.open_connection(URI)
    except KvmgpuError as e:
        raise SystemExit(f"demo: {e}") from None
    remove_old_demo(conn)
    xml_path = WORK / f"{VM}.xml"
    xml_path.write_text(domain_xml(kernel, initrd, console_log))
    sh(["virsh", "-c", URI, "define", str(xml_path)])

    step("give it a vGPU")
    kvmgpu = kvmgpu_bin()
    sh([kvmgpu, "gpus"], env=env)
    sh([kvmgpu, "attach", VM, "--gmem", args.gmem, "--compute", args.compute], env=env)

    step("start the kvmgpu daemon (it brings up the VM's worker when QEMU starts)")
    daemon = None
    if daemon_running():
        say("a kvmgpu daemon is already running: using it")
    else:
        log = WORK / "daemon.log"
        say(f"$ kvmgpu daemon    (in the background, log in {log})")
        daemon = subprocess.Popen([kvmgpu, "daemon"], env=env, stdout=open(log, "w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(50):
            if daemon_running():
                break
            if daemon.poll() is not None:
                raise SystemExit(f"demo: the daemon exited (status {daemon.returncode}); see {log}")
            time.sleep(0.2)

    step("boot the VM; inside it, the payload runs CUDA work on the vGPU")
    started = time.monotonic()
    sh(["virsh", "-c", URI, "start", VM])
    time.sleep(2)
    sh([kvmgpu, "list"], env=env)
    done = wait_shut_off(conn, args.timeout)
    wall = time.monotonic() - started
    console = console_log.read_text(errors="replace") if console_log.exists() else ""

    step("what the guest printed")
    for line in guest_lines(console):
        say("  | " + line)

    m = re.search(r"KVMGPU-EXIT (\d+)", console)
    ok_vector = "result checked OK" in console
    ok_quota = "CUDA_ERROR_OUT_OF_MEMORY (refused" in console
    step("summary")
    say(f"  backend:              {backend}")
    say(f"  guest finished:       {'yes' if done else 'NO (timed out)'} in {wall:.0f} s")
    say(f"  vector_add result:    {'checked OK' if ok_vector else 'NOT OK'}")
    say(f"  over-quota allocation: {'refused with CUDA_ERROR_OUT_OF_MEMORY' if ok_quota else 'NOT refused'}")
    ok_cuda_c = "CUDA-C-EXIT 0" in console and "\nFAIL " not in console.replace("\r", "")
    say("  CUDA C program:       " + (("ran, every check OK" if ok_cuda_c else "FAILED") if with_cuda_c
                                      else "left out (no nvcc on this machine)"))
    time.sleep(1)
    sh([kvmgpu, "list"], env=env)
    if daemon is not None:  # a daemon left behind would serve other people's VMs too
        daemon.terminate()
        daemon.wait(timeout=10)
        say("\nstopped the daemon the demo started (workers of running VMs would have stayed up)")
    sim = "" if backend == "cuda" else f"KVMGPU_SIM_GPUS={env['KVMGPU_SIM_GPUS']} "
    kg = os.path.relpath(kvmgpu)
    say("Look around:   " + f"{sim}{kg} list; {sim}{kg} gpus; virsh -c {URI} dumpxml {VM}")
    say(f"Boot again:    {sim}{kg} daemon &  virsh -c {URI} start {VM} --console")
    say(f"Clean up:      {sim}{kg} detach {VM}; virsh -c {URI} undefine {VM}; rm -rf {WORK}")
    passed = done and ok_vector and ok_quota and (ok_cuda_c or not with_cuda_c) and m is not None and m.group(1) == "0"
    say("\ndemo: " + ("PASSED" if passed else "FAILED"))
    return 0 if passed else 1


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
