# Copyright: kvmgpu contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filter for_venv: point a unit or hook that kvmgpu ships at the virtualenv kvmgpu is installed in."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

_SHEBANG_PYTHON = re.compile(r"^#!\s*(?:\S*/env\s+)?\S*python3?\b.*$")
_SHEBANG_SHELL = re.compile(r"^#!\s*\S*/(?:ba|da)?sh\b")
_EXEC_LINE = re.compile(r"^(Exec\w*=[-@:+!]*)(?:\S*/)?kvmgpu(?=\s|$)", re.M)
_SHELL_CALL = re.compile(r"^(\s*(?:exec\s+)?)(?:/\S*/)?kvmgpu(?=\s|$)", re.M)


def for_venv(text, venv, env=None):
    """`text` with the kvmgpu command and Python of `venv`, and `env` set for what it runs.

    - a systemd unit: Exec*= lines that run kvmgpu run venv/bin/kvmgpu; Environment= lines for `env`
      go after [Service];
    - a Python script: its shebang becomes venv/bin/python (it imports kvmgpu);
    - a shell script: lines that run kvmgpu run venv/bin/kvmgpu; `env` is exported after the shebang.
    """
    env = dict(env or {})
    venv = venv.rstrip("/")
    kvmgpu = venv + "/bin/kvmgpu"
    lines = text.split("\n")
    first = lines[0] if lines else ""
    if _SHEBANG_PYTHON.match(first):
        lines[0] = "#!" + venv + "/bin/python"
        if env:
            lines.insert(1, "import os; os.environ.update(%r)  # added by kvmgpu.kvmgpu" % env)
        return "\n".join(lines)
    if _SHEBANG_SHELL.match(first):
        text = _SHELL_CALL.sub(lambda m: m.group(1) + kvmgpu, text)
        if env:
            exports = "".join("export %s=%s\n" % (k, _sh_quote(v)) for k, v in sorted(env.items()))
            head, _, rest = text.partition("\n")
            text = head + "\n" + exports + rest
        return text
    text = _EXEC_LINE.sub(lambda m: m.group(1) + kvmgpu, text)
    if env:
        extra = "".join('\nEnvironment="%s=%s"' % (k, v) for k, v in sorted(env.items()))
        text = re.sub(r"^\[Service\][ \t]*$", lambda m: m.group(0) + extra, text, count=1, flags=re.M)
    return text


def _sh_quote(value):
    return "'" + str(value).replace("'", "'\"'\"'") + "'"


class FilterModule(object):
    def filters(self):
        return {"for_venv": for_venv}
