"""The native guest library (guest-agent/libcuda, libcuda.so.1): an unmodified C program written
against CUDA's own cuda.h, linked with -lcuda, runs on a real `kvmgpu worker --backend sim` in
loopback mode through it. Needs gcc and CUDA's cuda.h (nvcc's include directory); skipped, saying
which, where they are not there."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from loopback import PROGRAMS, ROOT, LoopbackWorker, need_kernels

PROGRAM = PROGRAMS / "driver_api.c"
_spec = importlib.util.spec_from_file_location("libcuda_build", ROOT / "guest-agent" / "libcuda" / "build.py")
libcuda_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(libcuda_build)


def cuda_include() -> Path | None:
    """CUDA's include directory (the one with cuda.h): CUDA_HOME, /usr/local/cuda, or nvcc's."""
    candidates = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    for base in candidates:
        if base and (Path(base) / "include" / "cuda.h").exists():
            return Path(base) / "include"
    return None


def build_program(lib_dir: Path, out: Path, extra=()) -> Path:
    include = cuda_include()
    if include is None:
        pytest.skip("CUDA's cuda.h is not here (install the CUDA toolkit's headers or set CUDA_HOME)")
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-Wno-deprecated-declarations", *extra,
                    "-I", str(include), str(PROGRAM), "-L", str(lib_dir), "-lcuda", "-ldl",
                    f"-Wl,-rpath,{lib_dir}", "-o", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    if libcuda_build.compiler() is None:
        pytest.skip("no C compiler (gcc) to build libcuda.so.1")
    lib_dir = tmp_path_factory.mktemp("libcuda")
    libcuda_build.build(lib_dir)
    return build_program(lib_dir, lib_dir / "driver_api")


def run(program, worker, *args, env=None, timeout=120):
    proc = subprocess.run([str(program), *args], capture_output=True, text=True, timeout=timeout,
                          env={**worker.env, **(env or {})})
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("DONE"), \
        f"{proc.stdout}\n{proc.stderr}\n--- worker ---\n{worker.output()}"
    assert "FAIL" not in proc.stdout, proc.stdout
    return proc


def test_library_exports_only_the_driver_api(program):
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(program.parent / "libcuda.so.1")],
                             capture_output=True, text=True, check=True).stdout.split("\n")
    names = [line.split()[-1] for line in symbols if line.strip()]
    assert names and all(n.startswith("cu") for n in names), names
    for needed in ("cuInit", "cuMemAlloc_v2", "cuLaunchKernel", "cuGetProcAddress_v2", "cuMemcpyHtoD_v2_ptds"):
        assert needed in names
    # every symbol the driver exports is there (dlsym finds it: cuBLASLt fails to start otherwise)
    header = (ROOT / "guest-agent" / "libcuda" / "driver_symbols.h").read_text()
    driver = set(re.findall(r"X\((cu\w+)\)", header))
    assert len(driver) > 600 and driver <= set(names), sorted(driver - set(names))[:10]
    assert os.readlink(program.parent / "libcuda.so") == "libcuda.so.1"


def test_a_driver_api_program_runs_a_kernel_on_the_vgpu(program, worker):
    # a 1 MiB window: the program's 3 MiB copies go through it in pieces
    out = run(program, worker, "main", str(need_kernels()), env={"KVMGPU_WINDOW": str(1 << 20)}).stdout
    for what in ("vector_add (0 wrong)", "saxpy through extra (0 wrong)", "dtod and memset (0 wrong)",
                 "big copy round trip", "elapsed time not negative", "everything freed",
                 "created context is current", "pop gives the pushed context", "a kernel's library",
                 "a module from a file; a missing file: CUDA_ERROR_FILE_NOT_FOUND"):
        assert f"OK {what}" in out, out
    assert "name=kvmgpu sim device" in out and f"total={64 << 20}" in out
    assert "libcuda" in worker.output()  # the worker saw the library's HELLO


def test_past_the_quota_is_out_of_memory(program, worker):
    out = run(program, worker, "quota").stdout
    assert "OK cuMemAlloc(&p, total + 1) = CUDA_ERROR_OUT_OF_MEMORY" in out


def test_bad_pointers_and_handles_are_errors(program, worker):
    out = run(program, worker, "bad").stdout
    assert "OK cuMemcpyHtoD(p + 4096, host, 64) = CUDA_ERROR_INVALID_VALUE" in out
    assert "OK cuMemFree(p + 8) = CUDA_ERROR_INVALID_VALUE" in out
    assert "= CUDA_ERROR_INVALID_HANDLE" in out and "TEXT out of memory" in out
    # a stream's flags: of no stream, of a destroyed one, into nowhere; nothing written
    assert "OK cuStreamGetFlags((CUstream)0x777, &stream_flags) = CUDA_ERROR_INVALID_HANDLE" in out
    assert "OK cuStreamGetFlags(gone, &stream_flags) = CUDA_ERROR_INVALID_HANDLE" in out
    assert "OK cuStreamGetFlags(NULL, NULL) = CUDA_ERROR_INVALID_VALUE" in out
    assert "OK stream flags untouched by the refused calls" in out


def test_hostile_inputs_to_the_2d_attribute_pool_and_tensor_map_calls(program, worker):
    """Each is refused with the named error, by the library or by the host (a 2D copy's rows past
    the allocation, a tensor past its allocation), and the program goes on."""
    proc = run(program, worker, "bad2d", str(need_kernels()))
    assert "FAIL" not in proc.stdout and proc.stdout.rstrip().endswith("DONE"), proc.stdout + proc.stderr
    assert "OK address range of p + 100" in proc.stdout
    assert "OK 300 functions found by handle (saxpy, vector_add)" in proc.stdout
    assert "OK 300 functions' attributes kept apart (0 wrong)" in proc.stdout
    assert "cuMemcpy2D: CUDA arrays are not given to a VM" in proc.stderr, proc.stderr


def test_get_proc_address_resolves_versions_and_logs_an_unknown_name_once(program, worker):
    proc = run(program, worker, "procaddr")
    assert "OK unknown: SYMBOL_NOT_FOUND" in proc.stdout
    assert proc.stderr.count("cuNoSuchThing is not a driver function") == 1, proc.stderr
    assert "OK not forwarded: a stub, NOT_SUPPORTED" in proc.stdout
    assert proc.stderr.count("cuMemAllocManaged is not forwarded to the vGPU") == 1, proc.stderr
    assert "OK dlsym of an unforwarded symbol: a stub, NOT_SUPPORTED" in proc.stdout
    assert "OK dlsym of a forwarded symbol: the library's own" in proc.stdout
    assert proc.stderr.count("cuStreamWaitValue32 is not forwarded to the vGPU") == 1, proc.stderr
    assert proc.stderr.count("cuFromTheFuture (CUDA 99.0) and any other function newer than CUDA 13.0") == 1
    assert "cuAlsoFromTheFuture" not in proc.stderr
    assert "OK TOOLS_TLS: the current context, read and set" in proc.stdout
    quiet = run(program, worker, "procaddr", env={"KVMGPU_LOG": "off"})
    assert "cuNoSuchThing" not in quiet.stderr


@pytest.mark.parametrize("mailbox", ["1", "off"])
def test_synchronous_calls_go_through_the_mailbox_unless_told_not_to(program, tmp_path, mailbox):
    """The same program, right either way; with the mailbox its synchronous calls (and the queued
    calls batched before them) are posted to the window's end, where the worker counts them."""
    stats = tmp_path / "stats.json"
    worker = LoopbackWorker(args=("--stats-file", str(stats)))
    try:
        out = run(program, worker, "main", str(need_kernels()), env={"KVMGPU_MAILBOX": mailbox}).stdout
        assert "FAIL" not in out and "DONE" in out, out
    finally:
        worker.stop()
    posts = json.loads(stats.read_text())["mailbox_posts"]
    assert (posts > 10) if mailbox == "1" else (posts == 0), posts


@pytest.mark.parametrize("window, env", [
    (4 << 20, {}),                                          # chunks of 1 MiB, the ring wrapping
    (4 << 20, {"KVMGPU_COPIER": "0", "KVMGPU_MAILBOX": "0"}),
    (64 << 20, {"KVMGPU_PIPE_MIN": "65536", "KVMGPU_COPY_SPLIT": "4096"}),
])
def test_bulk_copies_are_right_in_pieces(program, window, env):
    """Pipelined copies (HtoD chunks queued as they are written, DtoH two chunks ahead, the
    copier's threads) give back every byte, whatever the window and settings; a copy past an
    allocation's end is an error and the session goes on."""
    worker = LoopbackWorker(gmem="256M", region="64M")
    try:
        out = run(program, worker, "copies", "24", env={"KVMGPU_WINDOW": str(window), **env}).stdout
    finally:
        worker.stop()
    assert "FAIL" not in out and out.count("OK copies of") == 6 and "DONE" in out, out
    assert "OK page-locked copies" in out and "free twice: CUDA_ERROR_INVALID_VALUE" in out, out
    assert "DtoH past the end: CUDA_ERROR_INVALID_VALUE" in out, out
    assert "HtoD past the end: CUDA_ERROR_INVALID_VALUE" in out, out


def test_page_locked_memory_is_carved_out_of_the_window(program):
    """cuMemAllocHost's memory is in the shared window (the host's DMA reaches it: nothing is
    copied in the guest) while the window can spare it; a block bigger than half its ring is
    plain guest memory, and right either way."""
    worker = LoopbackWorker(gmem="256M", region="64M")
    try:
        proc = subprocess.run([str(program), "copies", "24"], capture_output=True, text=True, timeout=120,
                              env={**worker.env, "KVMGPU_WINDOW": str(32 << 20), "KVMGPU_LOG": "trace"})
    finally:
        worker.stop()
    assert "OK page-locked copies" in proc.stdout and "DONE" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stderr.count("kvmgpu: page-locked 1048576 bytes in the window at offset") == 2, proc.stderr
    assert "page-locked 25165824 bytes: plain guest memory (the window keeps half of its" in proc.stderr, proc.stderr


@pytest.mark.parametrize("name, value, says", [("KVMGPU_POLL_US", "soon", "is not a whole number from 0 to 1000000"),
                                               ("KVMGPU_BATCH_BYTES", "0", "is not a whole number from 1 to"),
                                               ("KVMGPU_MAILBOX", "2", "is not 0 or 1")])
def test_a_bad_setting_is_named_and_nothing_runs(program, worker, name, value, says):
    proc = subprocess.run([str(program), "quota"], capture_output=True, text=True, timeout=60,
                          env={**worker.env, name: value})
    assert proc.returncode != 0
    assert f"{name}={value} {says}" in proc.stderr, proc.stderr


def test_no_worker_is_no_device_with_the_reason(program, worker):
    env = {**worker.env, "KVMGPU_SHM": worker.shm + "-missing"}
    proc = subprocess.run([str(program), "quota"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1 and "cuInit(0): CUDA_ERROR_NO_DEVICE" in proc.stdout
    assert f"cannot open shared region {worker.shm}-missing" in proc.stderr


def test_a_killed_worker_is_an_error_not_a_crash(program, worker):
    proc = subprocess.Popen([str(program), "lost"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=worker.env)
    try:
        assert proc.stdout.readline().strip() == "READY"
        worker.proc.kill()
        worker.proc.wait()
        out, err = proc.communicate("go\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"{out}\n{err}"
    assert out.split("\n")[:3] == ["sync CUDA_ERROR_DEVICE_UNAVAILABLE", "copy CUDA_ERROR_DEVICE_UNAVAILABLE",
                                   "alloc CUDA_ERROR_DEVICE_UNAVAILABLE"], out
    assert "lost the channel to the host" in err


def _cli(*args, env=None, timeout=120):
    import sys
    return subprocess.run([sys.executable, "-c", "import sys; from kvmgpu_guest.cli import main; sys.exit(main())",
                           *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_kvmgpu_guest_run_puts_the_library_first_for_a_program_without_rpath(worker, tmp_path):
    from kvmgpu_guest import cli
    if not os.path.exists(os.path.join(cli.LIB_DIR, "libcuda.so.1")):
        pytest.skip(f"kvmgpu-guest was installed without libcuda.so.1 ({cli.LIB_DIR}; `make venv` builds it)")
    include = cuda_include()
    if include is None:
        pytest.skip("CUDA's cuda.h is not here (install the CUDA toolkit's headers or set CUDA_HOME)")
    prog = tmp_path / "driver_api"
    subprocess.run(["gcc", "-std=c11", "-Wno-deprecated-declarations", "-I", str(include), str(PROGRAM),
                    "-L", cli.LIB_DIR, "-lcuda", "-ldl", "-o", str(prog)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "KVMGPU_SOCKET", "KVMGPU_SHM")}
    proc = _cli("run", "--socket", worker.socket, "--shm", worker.shm, "--", str(prog), "quota", env=env)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("DONE"), proc.stdout + proc.stderr
    info = _cli("info", "--socket", worker.socket, "--shm", worker.shm, env=env)
    assert "libcuda.so.1" in info.stdout and "(loads;" in info.stdout, info.stdout


def test_an_nvcc_built_driver_api_program_runs_on_the_library(program, worker, tmp_path):
    """nvcc's own build (the runtime linked static, as nvcc does by default) of a vectorAddDrv-style
    program, linked with -lcuda against this library. The kernel is PTX loaded by the program;
    kernels the runtime registers from an embedded fatbin are the next milestone's."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc here (the CUDA toolkit)")
    lib_dir = program.parent
    prog = tmp_path / "vector_add_driver"
    subprocess.run([nvcc, "-o", str(prog), str(PROGRAMS / "vector_add_driver.cu"), "-L", str(lib_dir), "-lcuda",
                    "-Xlinker", f"-rpath={lib_dir}"], check=True, cwd=tmp_path)
    out = run(prog, worker, str(need_kernels())).stdout
    assert "OK vectorAdd (0 wrong)" in out


def _wait_listening(path: str) -> None:
    """The fixture waits for the socket file, which the agent binds before it listens."""
    import socket
    import time
    deadline = time.monotonic() + 10
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(path)
                return
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "the guest agent does not listen"
                time.sleep(0.02)


def test_programs_one_and_two_at_once_through_the_guest_agent(program, agent):
    """As in a VM: no loopback variables, the guest agent's socket, which hands over the region's
    fd; each process its own session and window (a sixteenth of the region: copies in pieces)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KVMGPU_SOCKET", "KVMGPU_SHM")}
    env["KVMGPU_AGENT_SOCKET"] = agent.path
    _wait_listening(agent.path)
    # the whole program alone (its last check is that the VM's quota is all free again), then two at once
    runs = [[("main", str(need_kernels()))], [("bad",), ("bad",)]]
    for batch in runs:
        procs = [subprocess.Popen([str(program), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env) for args in batch]
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0 and out.rstrip().endswith("DONE") and "FAIL" not in out, \
                f"{out}\n{err}\n--- worker ---\n{agent.worker.output()}"
            assert batch[0][0] != "main" or "OK vector_add (0 wrong)" in out and "OK big copy round trip" in out
    log = agent.worker.output()
    assert log.count("client 'kvmgpu libcuda/") == 3 and "window 0+1048576" in log  # a sixteenth each
