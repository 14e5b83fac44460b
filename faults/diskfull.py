"""Disk-full faults (RELIABILITY.md F4a, F4b): a small tmpfs under PostgreSQL or the loader.

F4a puts the target's tables on a tablespace on a small tmpfs: a fresh database whose
``default_tablespace`` is that tablespace, so that every table bq2pg creates (targets, side
tables, its ledger) lands there, while the catalogs and the WAL stay on the server's own disk.
A real ``bq2pg copy`` then fills it and PostgreSQL fails with ``53100 disk_full``:

* :func:`grow_trial` grows the tmpfs a moment after the loader starts retrying: the same run
  must finish, with nothing lost, duplicated or corrupted;
* :func:`stuck_trial` never grows it: the run must stop within its retry budget with exit
  code 4 and an error naming the full disk, publish nothing, and a re-run after growing the
  tmpfs must resume that run from its ledger and finish exactly once.

F4b is a small tmpfs under a file bq2pg writes (:func:`small_disk`). Both need root (``mount``);
:class:`Unsupported` says why when the machine refuses.

The connection URL cannot carry ``options=-c default_tablespace=...``: ``load.connect`` passes
its own ``options`` (the pinned session settings), which replace the URL's. Hence the database
setting.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from faults import harness

MIB = 1024 * 1024
#: The tablespace's tmpfs: about 60% of the ~13 MB that the harness's 20,000 rows take in
#: PostgreSQL 18 (measured), so that the disk fills mid-load, not at the very start or end.
SMALL_BYTES = 8 * MIB
#: The tmpfs after growing: room for the whole load, its side tables and publishing.
GROWN_BYTES = 200 * MIB
#: Free bytes below which the tmpfs counts as full (a relation grows by 8 KiB pages, and by
#: up to 64 pages at a time when several backends extend it at once).
FULL_BELOW_BYTES = 512 * 1024
#: Seconds a loader may run on a disk that is grown before it counts as hung.
GROW_DEADLINE_S = 180.0
#: Seconds a loader on a disk that stays full may take to give up: the writer retries a
#: transient error (53100 is one) for 8 attempts or 120 s (``writer.WRITE_RETRY_*``), about
#: 45 s with its back-off; the rest is margin.
STUCK_DEADLINE_S = 180.0
#: The writer's warning when it retries a chunk (its first retry after the disk filled).
RETRY_WARNING = "chunk.retried"  # the log event of a chunk retried
#: Seconds after the disk filled by which it is grown even if no retry warning was seen
#: (RELIABILITY.md F4a: "grown after about 4 s").
GROW_AT_LATEST_S = 4.0


class Unsupported(RuntimeError):
    """This machine cannot run the disk-full scenarios (not root, no tmpfs, remote server)."""


def _run(*args: str) -> None:
    try:
        subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise Unsupported(f"{args[0]} is not installed") from exc
    except subprocess.CalledProcessError as exc:
        raise Unsupported(f"{' '.join(args)} failed: {exc.stderr.strip()}") from exc


def mount_tmpfs(path: Path, size_bytes: int, uid: int = 0, gid: int = 0) -> None:
    """Mount a tmpfs of ``size_bytes`` on ``path``, its root owned by ``uid``:``gid``."""
    if os.geteuid() != 0:
        raise Unsupported("mounting a tmpfs needs root")
    options = f"size={size_bytes},mode=0700,uid={uid},gid={gid}"
    _run("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path))


def resize_tmpfs(path: Path, size_bytes: int) -> None:
    """Grow (or shrink) the tmpfs mounted on ``path``."""
    _run("mount", "-o", f"remount,size={size_bytes}", str(path))


def unmount(path: Path) -> None:
    """Unmount ``path`` (lazily if something still holds it) and remove the mount point."""
    try:
        _run("umount", str(path))
    except Unsupported:
        with contextlib.suppress(Unsupported):
            _run("umount", "-l", str(path))
    with contextlib.suppress(OSError):
        path.rmdir()


def free_bytes(path: Path) -> int:
    """Bytes still free on the file system of ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def small_disk(size_bytes: int, uid: int = 0, gid: int = 0) -> Iterator[Path]:
    """A fresh tmpfs of ``size_bytes``, unmounted afterwards (:class:`Unsupported` if none)."""
    path = Path(tempfile.mkdtemp(prefix="bq2pg-disk-"))
    try:
        mount_tmpfs(path, size_bytes, uid, gid)
    except Unsupported:
        path.rmdir()
        raise
    try:
        yield path
    finally:
        unmount(path)


def server_owner(conn: psycopg.Connection) -> tuple[int, int]:
    """The uid and gid the PostgreSQL server runs as: its data directory's owner."""
    row = conn.execute("SHOW data_directory").fetchone()
    try:
        st = os.stat(row[0] if row else "")
    except OSError as exc:
        raise Unsupported(
            "the PostgreSQL server's data directory is not on this machine: a tablespace on "
            "a local tmpfs needs a local server"
        ) from exc
    return st.st_uid, st.st_gid


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database`` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@dataclass
class Disk:
    """A database whose new tables land on a tablespace on a tmpfs of its own."""

    url: str
    path: Path
    size: int

    def grow(self, size_bytes: int = GROWN_BYTES) -> None:
        resize_tmpfs(self.path, size_bytes)
        self.size = size_bytes

    def free(self) -> int:
        return free_bytes(self.path)


@contextlib.contextmanager
def tablespace_database(pg_url: str, size_bytes: int = SMALL_BYTES) -> Iterator[Disk]:
    """A fresh database on ``pg_url``'s server whose tables go to a ``size_bytes`` tmpfs.

    The tmpfs is owned by the server's OS user (PostgreSQL refuses a tablespace directory it
    does not own). Afterwards the database, the tablespace and the tmpfs go.
    """
    name = f"bq2pg_disk_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        uid, gid = server_owner(admin)
        with small_disk(size_bytes, uid, gid) as path:
            ident = sql.Identifier(name)
            try:
                admin.execute(
                    sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(
                        ident, sql.Literal(str(path))
                    )
                )
            except psycopg.Error as exc:  # not a superuser, or a server in another namespace
                raise Unsupported(f"CREATE TABLESPACE on {path} failed: {exc}") from exc
            try:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
                admin.execute(
                    sql.SQL("ALTER DATABASE {} SET default_tablespace = {}").format(ident, ident)
                )
                yield Disk(with_database(pg_url, name), path, size_bytes)
            finally:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
                admin.execute(sql.SQL("DROP TABLESPACE IF EXISTS {}").format(ident))


def loader(
    emu, url: str, table_id: str, target: str, stderr: Path, mode: str = "append", **env: str
) -> subprocess.Popen[bytes]:
    """``bq2pg copy`` as :func:`harness.loader` runs it, in ``mode``, stderr to a file."""
    full_env = {
        **os.environ,
        "BQ2PG_BIGQUERY_ENDPOINT": emu.rest_url,
        "BQ2PG_BIGQUERY_STORAGE_ENDPOINT": emu.grpc_endpoint,
        "BQ2PG_PROJECT": "bq2pg-test",
        "BQ2PG_COPY_CHUNK_BYTES": str(harness.CHUNK_BYTES),
        **env,
    }
    args = ["copy", table_id, "--to", url, "--table", target, "--mode", mode]
    args += ["--streams", "3", "--columns", "publication_number,country_code,cpc"]
    with open(stderr, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "bq2pg", *args],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


@dataclass
class Outcome:
    """One loader process on a small disk."""

    returncode: int | None
    stderr: str
    seconds: float
    #: The disk filled while the loader ran.
    filled: bool
    hung: bool


def watch(
    proc: subprocess.Popen[bytes],
    disk: Disk,
    stderr: Path,
    *,
    grow_after: float | None,
    deadline_s: float,
) -> Outcome:
    """Wait for ``proc``; grow ``disk`` ``grow_after`` s after its first retry on a full disk
    (:data:`GROW_AT_LATEST_S` after the disk filled at the latest).

    ``grow_after=None`` never grows it. A process still running at ``deadline_s`` is killed
    and reported hung.
    """
    started = time.monotonic()
    filled_at: float | None = None
    grow_at: float | None = None
    while proc.poll() is None:
        now = time.monotonic()
        if now - started > deadline_s:
            proc.kill()
            proc.wait()
            text = stderr.read_text(errors="replace")
            return Outcome(None, text, now - started, filled_at is not None, True)
        if filled_at is None and disk.free() < FULL_BELOW_BYTES:
            filled_at = now
        if grow_after is not None and filled_at is not None:
            if grow_at is None and RETRY_WARNING in stderr.read_text(errors="replace"):
                grow_at = now + grow_after
            latest = filled_at + GROW_AT_LATEST_S
            if now >= (latest if grow_at is None else min(grow_at, latest)):
                disk.grow()
                grow_after = None
        time.sleep(0.05)
    seconds = time.monotonic() - started
    filled = filled_at is not None or disk.free() < FULL_BELOW_BYTES  # or it failed fast
    return Outcome(proc.returncode, stderr.read_text(errors="replace"), seconds, filled, False)


@dataclass
class DiskTrial(harness.Trial):
    """A :class:`harness.Trial` with each loader process's outcome, first to last."""

    runs: list[Outcome] = field(default_factory=list)
    #: Rows in the target after the run that gave up (``stuck_trial``; must be 0).
    published_early: int = 0
    #: Runs of the target in ``bq2pg.runs``, by status, at the end.
    statuses: dict[str, int] = field(default_factory=dict)


def _oracle(conn: psycopg.Connection, schema: str, expected: dict[str, int]) -> harness.Oracle:
    """:func:`harness.oracle`, or everything lost when the target does not exist."""
    try:
        return harness.oracle(conn, schema, expected)
    except psycopg.errors.UndefinedTable:
        return harness.Oracle(rows=0, lost=len(expected), duplicated=0, corrupted=0)


def _statuses(conn: psycopg.Connection, target: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, count(*) FROM bq2pg.runs WHERE target = %s GROUP BY 1", [target]
    ).fetchall()
    return {status: int(n) for status, n in rows}


def negative_control_env(directory: Path) -> dict[str, str]:
    """Environment for a loader that treats ``53100 disk_full`` as terminal (RELIABILITY.md
    c.4's deliberately broken loader): a ``sitecustomize`` module in ``directory`` wraps
    ``bq2pg.postgres.errors`` in the loader process; bq2pg's files are not touched."""
    (directory / "sitecustomize.py").write_text(_TERMINAL_DISK_FULL)
    path = [str(directory), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


_TERMINAL_DISK_FULL = """\
# faults/diskfull.py's negative control: this loader gives up on 53100 disk_full (class 53 no
# longer counts as transient at the PostgreSQL boundary).
from bq2pg.postgres import errors

errors.TRANSIENT_SQLSTATE_CLASSES = tuple(
    c for c in errors.TRANSIENT_SQLSTATE_CLASSES if c != "53"
)
"""


def grow_trial(emu, pg_url, table_id, expected, schema, rng, *, broken: bool = False) -> DiskTrial:
    """F4a: the tablespace fills mid-load and is grown a moment after the loader's first retry;
    the same run must finish. ``broken``: the negative control (:func:`negative_control_env`)."""
    target = f"{schema}.pubs"
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, tablespace_database(pg_url) as disk:
        log = Path(tmp) / "stderr"
        env = negative_control_env(Path(tmp)) if broken else {}
        proc = loader(emu, disk.url, table_id, target, log, **env)
        outcome = watch(
            proc, disk, log, grow_after=rng.uniform(0.5, 3.0), deadline_s=GROW_DEADLINE_S
        )
        with psycopg.connect(disk.url, autocommit=True) as pg:
            result = _oracle(pg, schema, expected)
            statuses = _statuses(pg, target)
    name = "PostgreSQL disk full, grown mid-load" + (" (negative control)" if broken else "")
    return DiskTrial(
        name,
        int(outcome.filled),
        result,
        [],
        outcome.hung,
        time.monotonic() - started,
        runs=[outcome],
        statuses=statuses,
    )


def stuck_trial(emu, pg_url, table_id, expected, schema, rng) -> DiskTrial:
    """F4a: the tablespace fills and stays full; the run must give up (exit 4) and publish
    nothing; a re-run after growing the tmpfs must resume it. Replace mode, so that "publish
    nothing" means no target table at all, whatever append does with its rows."""
    target = f"{schema}.pubs"
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, tablespace_database(pg_url) as disk:
        log = Path(tmp) / "stderr"

        def run(deadline_s: float) -> Outcome:
            proc = loader(emu, disk.url, table_id, target, log, mode="replace")
            return watch(proc, disk, log, grow_after=None, deadline_s=deadline_s)

        first = run(STUCK_DEADLINE_S)
        with psycopg.connect(disk.url, autocommit=True) as pg:
            published = harness.target_rows(pg, schema)
            durable = [harness.committed(pg, target)]
            disk.grow()
            time.sleep(rng.uniform(0.0, 0.5))
            second = run(GROW_DEADLINE_S)
            result = _oracle(pg, schema, expected)
            statuses = _statuses(pg, target)
    return DiskTrial(
        "PostgreSQL disk full, never grown; re-run",
        int(first.filled),
        result,
        durable,
        first.hung or second.hung,
        time.monotonic() - started,
        runs=[first, second],
        published_early=published,
        statuses=statuses,
    )
