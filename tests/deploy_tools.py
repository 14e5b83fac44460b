"""Where the deployment validators live, for the tests of the files under deploy/.

The validators (checkov, kubernetes-validate, python-hcl2, actionlint, hadolint, podman-compose,
pre-commit) have dependencies of their own that would clash with bq2pg's, so `make tools`
installs them into a second virtual environment, ``.venv-tools`` (pinned by
deploy/tools/constraints.txt); `make test` and `make lint` install it first. ``BQ2PG_TOOLS_BIN``
names another folder holding them. kubectl comes from the system (Debian's kubernetes-client,
or the Google Cloud SDK's), which .ci/run installs when it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
TOOLS_BIN = Path(os.environ.get("BQ2PG_TOOLS_BIN") or ROOT / ".venv-tools" / "bin")


def tool(name: str) -> Path:
    """The path of a validator from the tools environment; the test skips when it is absent."""
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in {TOOLS_BIN}: run `make tools` (make test does)")
    return path


def system_tool(name: str, package: str) -> str:
    """The path of a system command; the test skips, naming the package, when it is absent."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not on PATH: install Debian's {package} (.ci/run does)")
    return path


def run(*args: str | Path, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a validator and return what it did (output as text; never raises on failure)."""
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def ok(result: subprocess.CompletedProcess) -> str:
    """The validator's output, asserting it exited 0 (its output is the failure message)."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{output}"
    return output
