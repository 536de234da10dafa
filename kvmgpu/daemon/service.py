"""`kvmgpu daemon`: the main loop that keeps one worker per running VM with a vGPU.

Other threads (libvirt's event loop, udev, the API and metrics servers, signal handlers) only put
events on a queue or read a Status snapshot; the main loop alone starts, adopts, reaps and stops
workers, under one lock that snapshots also take. Every few seconds it reconciles with libvirt,
so a missed event only delays a worker, never loses one.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..domain.events import DomainStarted, DomainStopped, Libvirt, LibvirtClosed
from ..domain.host import channel_group, prepare_channel_dir
from ..errors import KvmgpuError
from ..inventory import Gpu, discover
from ..vgpu import VGpu, channel_path, region_path
from . import api
from .history import History
from .metrics import MetricsServer
from .status import DaemonStatus, GpuStatus, Status, VgpuStatus
from .udev import GpusChanged, GpuWatch
from .workers import Worker, Workers, WorkerSpec, channel_ready, choose_run_as

log = logging.getLogger("kvmgpu.daemon")

RECONCILE_EVERY = 10.0      # seconds between full reconciliations with libvirt
RECONNECT_EVERY = 2.0       # seconds between attempts to reach libvirtd again
STOP_GRACE = 10.0           # seconds a worker has to exit by itself after its VM stopped
KILL_GRACE = 3.0            # then seconds after SIGTERM before SIGKILL
HISTORY_EVERY = 5.0         # seconds between writes of a run's counters
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
NOT_READY_WARN_AFTER = 30.0  # seconds a running VM's channel may stay missing before that is a warning
STOP_WITHIN = 5.0           # seconds after SIGTERM / SIGINT before the process exits whatever it does


@dataclass(frozen=True)
class Options:
    uri: str | None = None
    run_dir: Path = Path("/run/kvmgpu")     # workers/<vm>.pid, stats/<vm>.json
    worker_user: str | None = None          # None: QEMU's user from qemu.conf; 'root': no switch
    metrics_host: str = "127.0.0.1"


@dataclass
class LiveVgpu:
    """A running VM's vGPU and its worker (None while one is due to start)."""

    vgpu: VGpu
    backend: str
    state: str = "running"                  # running | restarting (waiting to start again) | no-gpu
    worker: Worker | None = None
    failures: int = 0
    restart_at: float = 0.0
    not_ready_since: float | None = None    # since when its channel or region has been missing


class Daemon:
    def __init__(self, config: Config, options: Options):
        self.config = config
        self.options = options
        self.events: queue.Queue = queue.Queue()
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.started = time.time()
        self.gpus: list[Gpu] = []
        self.live: dict[str, LiveVgpu] = {}
        self.ending: list[Worker] = []      # workers of stopped VMs, until they are gone
        self.libvirt = Libvirt(options.uri, self.events)
        self.gpu_watch = GpuWatch(self.events)
        self.history: History | None = None
        self.workers: Workers | None = None
        self.api_server: api.ApiServer | None = None
        self.metrics_server: MetricsServer | None = None
        self._last_reconcile = 0.0
        self._swept = False  # leftover regions of VMs that stopped while no daemon ran
        self._last_connect_attempt = 0.0

    # --- start and stop ---------------------------------------------------------------------------

    def open(self) -> None:
        """Everything but the main loop: state, GPUs, servers, libvirt. Raises KvmgpuError."""
        state_dir = Path(self.config.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.history = History(state_dir / "history.db")
        run_as = choose_run_as(self.options.worker_user, channel_group(self.config))
        self.workers = Workers(self.options.run_dir, state_dir / "logs", run_as)
        prepare_channel_dir(self.config)
        self.rediscover()
        self.gpu_watch.start()
        # refuse early if another daemon serves the socket, before touching any worker
        self.api_server = api.ApiServer(self.config.api_socket, self.handle_request)
        if self.config.metrics_port:    # a port in use is refused here, before any worker is touched
            self.metrics_server = MetricsServer(self.options.metrics_host, self.config.metrics_port, self.status)
        self._try_connect()          # adopts or starts the running VMs' workers
        if self.libvirt.connected:
            kept = {w.run_id for w in self._all_workers() if w.run_id is not None}
            closed = self.history.close_open_runs(kept)
            if closed:
                log.info("closed %d history run(s) whose workers ended while no daemon ran", closed)
        if self.metrics_server is not None:
            self.metrics_server.start()
        self.api_server.start()      # the API answers once the first reconciliation is done

    def close(self) -> None:
        """Stop serving; running workers are left running for the next daemon to adopt."""
        for closer in (self.api_server, self.metrics_server):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # noqa: BLE001
                    log.exception("closing %s", type(closer).__name__)
        self.gpu_watch.stop()
        self.libvirt.disconnect()
        with self.lock:
            for live in self.live.values():
                if live.worker is not None and self.history is not None and live.worker.run_id is not None:
                    self._write_history(live.worker, force=True)
        if self.history is not None:
            self.history.close()
        running = [lv.worker.pid for lv in self.live.values() if lv.worker and not lv.worker.ended]
        log.info("daemon stopped; %d worker(s) left running: %s", len(running),
                 ", ".join(map(str, running)) or "none")

    def stop(self) -> None:
        self.stopping.set()
        self.events.put(None)

    def run(self) -> None:
        """The main loop, until stop()."""
        while not self.stopping.is_set():
            try:
                event = self.events.get(timeout=1.0)
            except queue.Empty:
                event = None
            while event is not None:
                self._handle(event)
                try:
                    event = self.events.get_nowait()
                except queue.Empty:
                    event = None
            if self.stopping.is_set():
                break
            now = time.time()
            if not self.libvirt.connected and now - self._last_connect_attempt >= RECONNECT_EVERY:
                self._try_connect()
            elif self.libvirt.connected and now - self._last_reconcile >= RECONCILE_EVERY:
                self.reconcile()
            self.tick()

    # --- events ---------------------------------------------------------------------------------

    def _handle(self, event: object) -> None:
        try:
            if isinstance(event, DomainStarted):
                self.reconcile_one(event.vm)
            elif isinstance(event, DomainStopped):
                log.info("%s %s", event.vm, event.why)
                self.release(event.vm)
            elif isinstance(event, LibvirtClosed):
                log.warning("lost libvirt (%s); reconnecting", event.why)
                self.libvirt.disconnect()
            elif isinstance(event, GpusChanged):
                log.info("NVIDIA PCI device %s: %s", event.action, event.device)
                self.rediscover()
                if self.libvirt.connected:
                    self.reconcile()
        except KvmgpuError as e:
            log.error("%s", e)
        except Exception:  # noqa: BLE001 (one bad event must not end the daemon)
            log.exception("handling %r failed", event)

    def _try_connect(self) -> None:
        self._last_connect_attempt = time.time()
        try:
            self.libvirt.connect()
        except KvmgpuError as e:
            log.warning("%s", e.message)
            return
        self.reconcile()

    def rediscover(self) -> None:
        gpus = discover(self.config)
        with self.lock:
            before = {g.uuid for g in self.gpus}
            after = {g.uuid for g in gpus}
            self.gpus = gpus
        for g in gpus:
            if g.uuid not in before:
                log.info("GPU %d: %s, %s, %d MiB%s", g.index, g.uuid, g.name, g.total_memory >> 20,
                         " (simulated)" if g.simulated else "")
        for gone in before - after:
            log.warning("GPU %s is gone", gone)
        if not gpus:
            log.warning("no GPUs found (no NVIDIA driver and no KVMGPU_SIM_GPUS / sim_gpus)")

    # --- reconciling with libvirt -------------------------------------------------------------

    def reconcile(self) -> None:
        """Make the workers match libvirt: a worker for each running VM with a vGPU, none else."""
        self._last_reconcile = time.time()
        try:
            running = self.libvirt.running_vgpus()
        except Exception as e:  # noqa: BLE001 (libvirt errors; retried at the next reconcile)
            log.warning("cannot list running domains: %s", e)
            return
        with self.lock:
            for vm, vgpu in running.items():
                self.ensure(vm, vgpu)
            for vm in [vm for vm in self.live if vm not in running]:
                self.release(vm)
            if not self._swept:
                self._sweep_regions()

    def _sweep_regions(self) -> None:
        """Once a start: remove the regions that VMs which stopped while no daemon ran left behind
        (only of domains with a vGPU that libvirt says are not running; loopback files and other
        people's are never touched)."""
        try:
            stopped = self.libvirt.stopped_vgpu_vms()
        except Exception as e:  # noqa: BLE001 (libvirt errors; tried again at the next reconcile)
            log.warning("cannot list stopped domains: %s", e)
            return
        for vm in stopped:
            self.remove_region(vm)
        self._swept = True

    def reconcile_one(self, vm: str) -> None:
        """Reconcile one VM (after an event about it); nothing while libvirt is away."""
        if not self.libvirt.connected:
            return
        try:
            vgpu = self.libvirt.running_vgpu(vm)
        except Exception as e:  # noqa: BLE001 (libvirt errors; retried at the next reconcile)
            log.warning("cannot look up %s: %s", vm, e)
            return
        with self.lock:
            if vgpu is None:
                self.release(vm)
            else:
                self.ensure(vm, vgpu)

    def ensure(self, vm: str, vgpu: VGpu) -> None:
        """`vm` runs with `vgpu`: adopt or start its worker unless it has a live one."""
        assert self.workers is not None
        live = self.live.get(vm)
        gpu = self._gpu_for(vgpu)
        if live is None or live.vgpu != vgpu:
            if live is not None and live.worker is not None:
                # the vGPU changed under a live worker (redefined while running): it keeps its
                # settings until the VM restarts; the metadata is the next boot's
                return
            live = LiveVgpu(vgpu=vgpu, backend="sim" if gpu is None or gpu.simulated else "cuda")
            self.live[vm] = live
        if gpu is None:
            if live.state != "no-gpu":
                log.error("%s: its vGPU is on GPU %d (%s), which this host does not have now",
                          vm, vgpu.gpu, vgpu.gpu_uuid)
            live.state = "no-gpu"
            return
        if live.worker is not None and live.worker.poll():
            live.state = "running"
            return
        spec = self._spec(vgpu, gpu, live.backend)
        if live.worker is None and live.failures == 0:
            adopted = self.workers.adopt(spec)
            if adopted is not None:
                self._begin_run(adopted, vgpu)
                live.worker, live.state = adopted, "running"
                return
        if time.time() < live.restart_at:
            live.state = "restarting"
            return
        not_ready = channel_ready(spec)
        if not_ready:
            # normal for a moment while QEMU starts or goes (libvirt still says it runs after the
            # channel is gone): a warning only when it lasts
            now = time.time()
            if live.not_ready_since is None:
                live.not_ready_since = now
            waited = now - live.not_ready_since
            if waited >= NOT_READY_WARN_AFTER:
                log.warning("%s: not starting its worker: %s for %.0f s while libvirt says the VM runs",
                            vm, not_ready, waited)
                live.not_ready_since = now          # said again after as long again
            else:
                log.info("%s: not starting its worker yet: %s", vm, not_ready)
            live.state, live.restart_at = "restarting", now + RESTART_BACKOFF[0]
            return
        live.not_ready_since = None
        worker = self.workers.start(spec)
        self._begin_run(worker, vgpu)
        live.worker, live.state = worker, "running"

    def release(self, vm: str) -> None:
        """`vm` stopped: its worker should go by itself; it is given STOP_GRACE, then signalled.
        Its quota is free at once."""
        live = self.live.pop(vm, None)
        if live is not None:
            if live.worker is not None and not live.worker.ended:
                live.worker.stop_requested = time.time()
                self.ending.append(live.worker)
            log.info("%s: vGPU released (%s on GPU %d)", vm, _mib(live.vgpu.gmem), live.vgpu.gpu)
        self.remove_region(vm)

    def remove_region(self, vm: str) -> None:
        """Unlink /dev/shm/kvmgpu-<vm> (QEMU creates it and nobody else removes it; it holds the
        guest's data) once libvirt says the VM does not run. Its worker may still have it mapped:
        that mapping stays valid. Nothing while libvirt cannot say (the next stop event or
        reconciliation of that VM tries again)."""
        path = Path(region_path(vm))
        if not os.path.lexists(path) or not self.libvirt.connected:
            return
        try:
            if self.libvirt.is_active(vm):
                return
        except Exception as e:  # noqa: BLE001 (libvirt errors: keep the file for now)
            log.warning("%s: not removing %s: cannot ask libvirt whether it runs: %s", vm, path, e)
            return
        try:
            path.unlink()
            log.info("%s: removed its region %s", vm, path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("%s: cannot remove its region %s: %s", vm, path, e)

    def _gpu_for(self, vgpu: VGpu) -> Gpu | None:
        for g in self.gpus:
            if g.uuid == vgpu.gpu_uuid:
                return g
        return None

    def _spec(self, vgpu: VGpu, gpu: Gpu, backend: str) -> WorkerSpec:
        assert self.workers is not None
        return WorkerSpec(vm=vgpu.vm, backend=backend, gmem=vgpu.gmem, gpu=gpu.index, compute=vgpu.compute,
                          compute_mode=vgpu.compute_mode, socket=Path(channel_path(self.config, vgpu.vm)),
                          shm=Path(region_path(vgpu.vm)), stats_file=self.workers.stats_file(vgpu.vm),
                          region_size=vgpu.region_size)

    # --- workers -------------------------------------------------------------------------------

    def tick(self) -> None:
        """Reap ended workers, hurry those whose VM stopped, read counters, restart crashed ones."""
        assert self.workers is not None
        now = time.time()
        with self.lock:
            for live in list(self.live.values()):
                w = live.worker
                if w is None:
                    continue
                if w.poll():
                    if w.refresh_stats():
                        self._write_history(w)
                    if w.started < now - 60:
                        live.failures = 0            # ran a minute: the next crash starts the backoff over
                    continue
                self._ended(w)
                live.worker = None
                if not self._still_runs(w.vm):
                    self.release(w.vm)                   # the VM stopped; its event is on its way
                    continue
                delay = RESTART_BACKOFF[min(live.failures, len(RESTART_BACKOFF) - 1)]
                live.failures += 1
                live.restart_at = now + delay
                live.state = "restarting"
                # exit 0: its channel closed, which QEMU does when it goes: the VM is stopping and
                # libvirt has not said so yet (a normal stop). The restart asks libvirt again first.
                # An adopted worker's exit status is unknown: taken as such an end, not as a crash.
                if w.exit_status in (0, None):
                    log.info("worker for %s (pid %d) ended: its channel closed (the VM is stopping?); "
                             "another in %.0f s if the VM still runs then", w.vm, w.pid, delay)
                else:
                    log.warning("worker for %s (pid %d) ended while its VM runs (%s); starting another "
                                "in %.0f s if the VM still runs", w.vm, w.pid, _status_text(w.exit_status),
                                delay)
            for vm, live in list(self.live.items()):
                if live.worker is None and live.state == "restarting" and now >= live.restart_at:
                    self.reconcile_one(vm)               # re-checked with libvirt before starting
            for w in list(self.ending):
                if not w.poll():
                    self._ended(w)
                    self.ending.remove(w)
                    continue
                w.refresh_stats()
                waited = now - (w.stop_requested or now)
                if waited > STOP_GRACE + KILL_GRACE and w.signalled != signal.SIGKILL:
                    log.warning("worker for %s (pid %d) ignored SIGTERM: killing it", w.vm, w.pid)
                    w.signal(signal.SIGKILL)
                elif waited > STOP_GRACE and not w.signalled:
                    log.warning("worker for %s (pid %d) still runs %.0f s after its VM stopped: SIGTERM",
                                w.vm, w.pid, waited)
                    w.signal(signal.SIGTERM)

    def _still_runs(self, vm: str) -> bool:
        """Whether libvirt says `vm` runs with a vGPU (True when libvirt cannot say)."""
        if not self.libvirt.connected:
            return True
        try:
            return self.libvirt.running_vgpu(vm) is not None
        except Exception:  # noqa: BLE001
            return True

    def _begin_run(self, worker: Worker, vgpu: VGpu) -> None:
        assert self.history is not None
        if worker.adopted:
            run = self.history.open_run(vgpu.vm, worker.pid)
            if run is not None:
                worker.run_id, worker.peak = run.id, run.peak_memory
                worker.refresh_stats()
                return
        worker.run_id = self.history.start_run(vgpu.vm, vgpu.id, vgpu.gpu, worker.pid, worker.started)
        worker.refresh_stats()

    def _write_history(self, worker: Worker, force: bool = False) -> None:
        if self.history is None or worker.run_id is None:
            return
        now = time.time()
        if not force and now - getattr(worker, "_history_at", 0.0) < HISTORY_EVERY:
            return
        worker._history_at = now  # type: ignore[attr-defined]
        self.history.update_run(worker.run_id, worker.peak, worker.stats.gpu_seconds, worker.stats.calls)

    def _ended(self, worker: Worker) -> None:
        assert self.workers is not None and self.history is not None
        worker.refresh_stats()
        self._write_history(worker, force=True)
        if worker.run_id is not None:
            self.history.end_run(worker.run_id, worker.exit_status)
        self.workers.forget(worker)
        log.info("worker for %s (pid %d) ended: %s; peak %s, %d calls, %.3f GPU s", worker.vm, worker.pid,
                 _status_text(worker.exit_status), _mib(worker.peak), worker.stats.calls,
                 worker.stats.gpu_seconds)

    def _all_workers(self) -> list[Worker]:
        return [lv.worker for lv in self.live.values() if lv.worker is not None] + list(self.ending)

    # --- what the API and metrics see ------------------------------------------------------------

    def status(self) -> Status:
        with self.lock:
            vgpus = []
            for vm, live in sorted(self.live.items()):
                w = live.worker
                stats = w.stats if w else None
                vgpus.append(VgpuStatus(
                    vm=vm, id=live.vgpu.id, gpu=live.vgpu.gpu, gpu_uuid=live.vgpu.gpu_uuid, gmem=live.vgpu.gmem,
                    compute=live.vgpu.compute, compute_mode=live.vgpu.compute_mode, state=live.state,
                    backend=live.backend, worker_pid=w.pid if w else None, adopted=bool(w and w.adopted),
                    started=w.started if w else None, used=stats.memory_used if stats else 0,
                    peak=w.peak if w else 0, calls=stats.calls if stats else 0,
                    bytes=stats.bytes if stats else 0, gpu_seconds=stats.gpu_seconds if stats else 0.0,
                    channel_errors=_channel_errors(stats)))
            gpus = []
            for g in self.gpus:
                on = [v for v in vgpus if v.gpu_uuid == g.uuid]
                gpus.append(GpuStatus(index=g.index, uuid=g.uuid, name=g.name, total_memory=g.total_memory,
                                      simulated=g.simulated, promised=sum(v.gmem for v in on),
                                      used=sum(v.used for v in on), vgpus=len(on)))
            daemon = DaemonStatus(pid=os.getpid(), started=self.started,
                                  libvirt="connected" if self.libvirt.connected else "disconnected",
                                  uri=self.libvirt.uri or "", metrics=self.metrics_server.address
                                  if self.metrics_server else None)
            return Status(daemon=daemon, gpus=tuple(gpus), vgpus=tuple(vgpus))

    def handle_request(self, request: api.Request) -> dict:
        if isinstance(request, api.StatusRequest):
            return self.status().to_json()
        if isinstance(request, api.VgpuRequest):
            for v in self.status().to_json()["vgpus"]:
                if v["vm"] == request.vm:
                    return {"vgpu": v}
            raise api.ApiError("not-found", f"VM {request.vm!r} has no running vGPU")
        if isinstance(request, api.HistoryRequest):
            assert self.history is not None
            return {"runs": [vars(r) for r in self.history.runs(request.vm, request.limit)]}
        raise api.ApiError("unknown-op", f"op {type(request).__name__} is not served")


def _mib(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB"


def _status_text(code: int | None) -> str:
    if code is None:
        return "exit status unknown (not this daemon's child)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class _Stopped(BaseException):
    """SIGTERM or SIGINT while the daemon was still starting: start-up is abandoned (a
    BaseException, as KeyboardInterrupt is, so that no `except Exception` on the way keeps it)."""


def serve(config: Config, options: Options) -> int:
    """Run the daemon in the foreground until SIGTERM or SIGINT; returns the exit status.

    A signal stops the daemon in every phase: while it runs, the main loop ends at once; while it
    starts, start-up is abandoned (the handler raises); and should the main thread be stuck where
    Python cannot run a handler (a libvirt call that does not return), a watcher thread, woken by
    the signal itself (set_wakeup_fd), ends the process STOP_WITHIN seconds later. Workers are
    separate processes and keep running either way; the next daemon adopts them."""
    daemon = Daemon(config, options)
    starting = True
    finished = threading.Event()

    def on_signal(signum: int, frame) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        daemon.stop()
        if starting:
            raise _Stopped(signal.Signals(signum).name)

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)

    def watch() -> None:
        while (signum := os.read(wake_read, 1)[0]) not in (signal.SIGTERM, signal.SIGINT):
            pass
        daemon.stop()                   # in case the main thread cannot run its handler
        if not finished.wait(STOP_WITHIN):
            log.error("%s: still not stopped %.0f s after it (stuck in a call that does not return, "
                      "e.g. to an unresponsive libvirtd): exiting now; workers keep running",
                      signal.Signals(signum).name, STOP_WITHIN)
            logging.shutdown()
            os._exit(1)

    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=watch, name="kvmgpu-stop", daemon=True).start()
    try:
        try:
            daemon.open()
            starting = False
            if not daemon.stopping.is_set():
                log.info("kvmgpu daemon running (pid %d)", os.getpid())
            daemon.run()
        except _Stopped:
            log.info("start-up abandoned")
        finally:
            starting = False
            daemon.close()
    finally:
        finished.set()
    return 0


def _channel_errors(stats) -> dict[str, int]:
    """The worker's closed and refused channels, by why (the metric's `why` label)."""
    if stats is None:
        return {}
    return {"protocol_violation": stats.protocol_violations, "internal_error": stats.internal_errors,
            "refused": stats.channels_refused}
