# Copyright: kvmgpu contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filter kvmgpu_unit: the systemd unit kvmgpu ships, pointed at the kvmgpu that was installed."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

_EXEC_START = re.compile(r"^ExecStart=.*$", re.M)
_SERVICE = re.compile(r"^\[Service\][ \t]*$", re.M)


def kvmgpu_unit(text, kvmgpu, env=None):
    """`text` (kvmgpu/data/kvmgpu.service) with ExecStart running `kvmgpu daemon` from the path
    `kvmgpu`, as `python -m kvmgpu.daemon.install` writes it, and an Environment= line for each
    of `env` after [Service]."""
    text = _EXEC_START.sub(lambda m: "ExecStart=%s daemon" % kvmgpu, text, count=1)
    extra = "".join('\nEnvironment="%s=%s"' % (k, v) for k, v in sorted(dict(env or {}).items()))
    if extra:
        text = _SERVICE.sub(lambda m: m.group(0) + extra, text, count=1)
    return text if text.endswith("\n") else text + "\n"


class FilterModule(object):
    def filters(self):
        return {"kvmgpu_unit": kvmgpu_unit}
