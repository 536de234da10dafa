"""ruff and mypy over the tree, with the settings in pyproject.toml (`make test` runs them; alone:
`.venv/bin/ruff check` and `.venv/bin/mypy` from the repository root). The tools come with the
`test` extra, pinned; where one is not installed its test is skipped, saying so."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed here: pip install -e '.[test]' (make venv installs it)")
    return subprocess.run([sys.executable, "-m", name, *args], cwd=cwd, capture_output=True, text=True)


def test_ruff_finds_nothing():
    r = _tool("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert r.returncode == 0, f"ruff check found problems (fix them; imports: ruff check --fix):\n{r.stdout}{r.stderr}"


def test_mypy_finds_nothing():
    r = _tool("mypy")  # the files and settings: [tool.mypy] in pyproject.toml
    assert r.returncode == 0, f"mypy found problems:\n{r.stdout}{r.stderr}"


def test_the_settings_catch_what_they_are_for(tmp_path):
    """The checks above pass because the code is clean, not because the settings check nothing:
    an unused import, an unsorted import block and a type error are each found."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\n\ndef f(x: int) -> str:\n    return x\n")
    config = str(REPO / "pyproject.toml")
    r = _tool("ruff", "check", "--no-cache", "--config", config, str(bad), cwd=tmp_path)
    assert r.returncode == 1 and "F401" in r.stdout and "I001" in r.stdout, r.stdout + r.stderr
    r = _tool("mypy", "--config-file", config, "--no-incremental", str(bad), cwd=tmp_path)
    assert r.returncode == 1 and "Incompatible return value type" in r.stdout, r.stdout + r.stderr
