"""Fuzz harness: the worker's channel and dispatch (kvmgpu/worker/channel.py, dispatch.py) on a
VGpu with the sim backend and a real shared region, played a hostile guest's script.

    python tests/fuzz/fuzz_channel.py -max_total_time=600 tests/fuzz/corpus/channel

The input format is guestscript.py's; what is checked after every step and at the end of every
input is vgpuhost.py's. Any exception but a `RemoteProtocolError` (which must close that channel
only) is a finding, and so is a broken invariant (an AssertionError).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":  # instrument the code under test before anything imports it
    import atheris
    with atheris.instrument_imports(include=["kvmgpu_guest", "kvmgpu"]):
        import kvmgpu.backend.launcher  # noqa: F401
        import kvmgpu.backend.sim  # noqa: F401
        import kvmgpu.worker  # noqa: F401
        import kvmgpu_wire.mailbox  # noqa: F401
        import kvmgpu_wire.protocol  # noqa: F401

import logging

from vgpuhost import play


def one_input(data: bytes) -> None:
    play(data)


def main() -> None:
    logging.getLogger("kvmgpu").addHandler(logging.NullHandler())  # a line per violation: not read here
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
