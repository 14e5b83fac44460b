"""Run the local BigQuery emulator (``bqemulator``): real REST and Storage Read gRPC APIs.

bq2pg starts it as a child process on free loopback ports for ``bq2pg demo``, ``bq2pg
emulator start`` and the tests. It needs the ``embedded`` extra (``pip install
'bq2pg[embedded]'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bq2pg.errors import EmbeddedError

log = logging.getLogger(__name__)

#: The emulator answers Storage Read replies above its default 11 MiB limit with an error;
#: one batch of wide patents rows is larger (DESIGN.md, known facts).
EMULATOR_MAX_MESSAGE_BYTES = 1 << 30
#: Seconds to wait for the emulator to answer /readyz; it starts in ~3 s here.
EMULATOR_START_TIMEOUT_S = 90.0
#: Seconds for a graceful stop after SIGTERM before SIGKILL.
EMULATOR_STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def install_spatial_extension() -> None:
    """Install DuckDB's spatial extension from the ``duckdb-extension-spatial`` wheel.

    The emulator loads it at start and would otherwise try to download it; the install is a
    copy into DuckDB's extension directory, so it is done once per machine.
    """
    try:
        import duckdb
        import duckdb_extension_spatial
    except ImportError as exc:
        raise EmbeddedError(
            "the BigQuery emulator needs the embedded extra: pip install 'bq2pg[embedded]'"
        ) from exc
    package = Path(duckdb_extension_spatial.__file__).parent
    found = sorted(package.glob(f"extensions/v{duckdb.__version__}/spatial.duckdb_extension"))
    if not found:
        raise EmbeddedError(
            f"duckdb-extension-spatial has no build for duckdb {duckdb.__version__}; "
            "install matching versions (see pyproject.toml)"
        )
    con = duckdb.connect()
    try:
        con.execute(f"INSTALL '{found[0]}'")
    finally:
        con.close()


@dataclass
class Emulator:
    """A running emulator: its REST URL, its gRPC ``host:port`` and its process."""

    rest_url: str
    grpc_endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        """Stop the emulator (SIGTERM, then SIGKILL after a grace period)."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=EMULATOR_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start(
    *,
    project: str = "patents-public-data",
    data_dir: Path | None = None,
    log_path: Path,
    rest_port: int | None = None,
    grpc_port: int | None = None,
) -> Emulator:
    """Start the emulator on free (or given) loopback ports and wait until it answers.

    Args:
        project: the emulator's default project.
        data_dir: keep its data there; ``None`` keeps it in memory.
        log_path: where its output goes.
        rest_port, grpc_port: fixed ports, or free ones when ``None``.
    """
    install_spatial_extension()
    rest = rest_port or free_port()
    grpc_p = grpc_port or free_port()
    env = dict(
        os.environ,
        BQEMU_WRITE_API_MAX_REQUEST_BYTES=str(EMULATOR_MAX_MESSAGE_BYTES),
        # The Avro/ORC format extensions would be downloaded at start: not needed, not offline.
        BQEMU_ENABLE_FORMAT_EXTENSIONS="false",
        BQEMU_LOG_LEVEL=os.environ.get("BQEMU_LOG_LEVEL", "warning"),
    )
    cmd = [sys.executable, "-m", "bqemulator", "start", "--rest-port", str(rest)]
    cmd += ["--grpc-port", str(grpc_p), "--project", project]
    cmd += ["--data-dir", str(data_dir)] if data_dir else ["--ephemeral"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    emulator = Emulator(f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc_p}", process, log_path)
    try:
        _wait_ready(emulator)
    except BaseException:
        emulator.stop()
        raise
    log.info("emulator ready at %s (gRPC %s)", emulator.rest_url, emulator.grpc_endpoint)
    return emulator


def _wait_ready(emulator: Emulator) -> None:
    deadline = time.monotonic() + EMULATOR_START_TIMEOUT_S
    host, port = emulator.grpc_endpoint.rsplit(":", 1)
    rest_ok = False
    while time.monotonic() < deadline:
        if emulator.process.poll() is not None:
            raise EmbeddedError(
                f"the BigQuery emulator exited with code {emulator.process.returncode}; "
                f"its log is {emulator.log_path}"
            )
        if not rest_ok:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(emulator.rest_url + "/readyz", timeout=1) as r,
            ):
                rest_ok = r.status == 200
        if rest_ok:  # gRPC binds after REST
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 1):
                return
        time.sleep(0.1)
    raise EmbeddedError(
        f"the BigQuery emulator did not answer within {EMULATOR_START_TIMEOUT_S:.0f} s; "
        f"its log is {emulator.log_path}"
    )
