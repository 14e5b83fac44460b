"""Dead letters: rows PostgreSQL rejects never abort their chunk, and are never lost.

When a chunk's COPY fails on a row's data (NUL in text, invalid UTF-8, NaN or over-deep JSON
in jsonb, a value out of range, a NULL key …), :func:`isolate` loads the chunk again inside one
transaction, halving the failing source rows under savepoints until each bad row stands alone;
every such row goes to ``bq2pg.dead_letters`` with its run, stream, offset, the error (SQLSTATE,
message, the COPY context naming the column) and the raw row as ASCII JSON. The rest loads, and
the chunk's ledger row commits in the same transaction, so
``rows_read = rows_loaded + rows_dead_lettered`` holds exactly, per chunk and per run.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.rows import class_row, dict_row

from bq2pg.arrow.encode import Encoder
from bq2pg.observe.log import get_logger
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres import copy
from bq2pg.postgres.errors import is_row_error, translate
from bq2pg.state import ledger

log = get_logger(__name__)
#: Checksums rows of a table (``quality.checksum.Checksummer.of``): None when not computable.
Summer = Callable[[str, pa.Table], int | None]
Split = Callable[[pa.Table], dict[str, pa.Table]]


@dataclass
class Outcome:
    """What the isolation loaded and dead-lettered."""

    rows: dict[str, int]
    nbytes: dict[str, int]
    dead: int
    #: Content checksums of the loaded rows per table (empty: not computed).
    checksums: dict[str, int] = field(default_factory=dict)


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    return str(value)


def raw_row(row: pa.Table) -> str:
    """The source row as ASCII JSON (bytes as base64; never fails on odd values)."""
    try:
        values = row.to_pylist()[0]
    except (UnicodeDecodeError, pa.ArrowException) as exc:  # e.g. invalid UTF-8
        return json.dumps({"unreadable": str(exc), "columns": row.column_names})
    return json.dumps(values, default=_json_default, ensure_ascii=True)


def isolate(
    conn: psycopg.Connection,
    plan: TablePlan,
    physical: Callable[[TablePlan], str],
    pieces: list[tuple[int, pa.Table]],
    split: Split,
    encoders: dict[str, Encoder],
    chunk: ledger.ChunkRecord | None,
    run_id: uuid.UUID | None,
    stream: str,
    summer: Summer | None = None,
) -> Outcome:
    """Load ``pieces`` (offset, source rows) in one transaction, dead-lettering bad rows;
    ``summer`` checksums the rows that load."""
    tables = plan.all_tables()
    names = [t.name for t in tables]
    outcome = Outcome(dict.fromkeys(names, 0), dict.fromkeys(names, 0), 0)
    sums: dict[str, int | None] = dict.fromkeys(names, 0) if summer else {}

    def attempt(offset: int, rows: pa.Table) -> None:
        parts = split(rows)
        payloads = {t.name: encoders[t.name].encode(parts[t.name]) for t in tables}
        try:
            with conn.transaction(), conn.cursor() as cur:  # a savepoint
                copy.write_parts(cur, _parts(tables, parts, payloads, encoders, physical))
        except psycopg.Error as exc:
            if not is_row_error(exc):
                raise
            if rows.num_rows > 1:
                half = rows.num_rows // 2
                attempt(offset, rows.slice(0, half))
                attempt(offset + half, rows.slice(half))
                return
            _dead_letter(conn, run_id, stream, offset, plan, rows, exc)
            outcome.dead += 1
            return
        for t in tables:
            outcome.rows[t.name] += parts[t.name].num_rows
            outcome.nbytes[t.name] += payloads[t.name].size
            if summer is not None:
                piece = summer(t.name, parts[t.name])
                total = sums[t.name]
                sums[t.name] = None if piece is None or total is None else total + piece

    # the fault suite's negative control: the ledger row in a transaction of its own
    separate = chunk is not None and ledger.split_ledger()
    try:
        entry = None
        with conn.transaction():
            for offset, rows in pieces:
                attempt(offset, rows)
            outcome.checksums = {k: v for k, v in sums.items() if v is not None}
            if chunk is not None:
                entry = dataclasses.replace(
                    chunk,
                    rows=outcome.rows,
                    nbytes=sum(outcome.nbytes.values()),
                    checksums=outcome.checksums,
                    dead_letters=outcome.dead,
                )
                if not separate:
                    ledger.record(conn, entry)
        if separate and entry is not None:
            time.sleep(ledger.SPLIT_LEDGER_GAP_S)  # the window the fault tests aim at
            with conn.transaction():
                ledger.record(conn, entry)
    except psycopg.Error as exc:  # not a row's fault: the connection, the disk, the server
        raise translate(exc, f"isolating rejected rows of {plan.qualified}") from exc
    log.debug("chunk.isolated", rows=outcome.dead, table=plan.qualified)
    return outcome


def _dead_letter(
    conn: psycopg.Connection,
    run_id: uuid.UUID | None,
    stream: str,
    offset: int,
    plan: TablePlan,
    row: pa.Table,
    exc: psycopg.Error,
) -> None:
    diag = exc.diag
    conn.execute(
        "INSERT INTO bq2pg.dead_letters (run_id, stream, row_offset, target, sqlstate, error, "
        "context, raw, source_row) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            run_id,
            stream,
            offset,
            plan.qualified,
            exc.sqlstate,
            diag.message_primary or str(exc),
            diag.context,
            raw_row(row),
            _ipc(row),
        ],
    )


def _parts(
    tables: list[TablePlan],
    parts: dict[str, pa.Table],
    payloads: dict[str, pa.Buffer],
    encoders: dict[str, Encoder],
    physical: Callable[[TablePlan], str],
) -> list[copy.Part]:
    """The COPY parts of the tables that have rows."""
    return [
        copy.Part(t, physical(t), [payloads[t.name]], encoders[t.name].format)
        for t in tables
        if parts[t.name].num_rows
    ]


def _ipc(row: pa.Table) -> bytes:
    """The source row exactly as read (Arrow IPC), so that it can be replayed."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, row.schema) as writer:
        writer.write_table(row)
    return sink.getvalue().to_pybytes()


@dataclass
class Replayed:
    """What a replay did: rows loaded (and their dead letters deleted), rows still failing."""

    loaded: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


def pending(conn: psycopg.Connection, target: str, ids: list[int] | None = None) -> list[dict]:
    """The dead letters of ``target`` (or only ``ids``) with the arguments of their runs."""
    query = sql.SQL(
        "SELECT d.id, d.run_id, d.stream, d.row_offset, d.source_row, r.arguments, r.mode "
        "FROM bq2pg.dead_letters d "
        "LEFT JOIN bq2pg.runs r USING (run_id) WHERE d.target = {} {} ORDER BY d.id"
    ).format(
        sql.Literal(target),
        sql.SQL("AND d.id = ANY({})").format(sql.Literal(ids)) if ids else sql.SQL(""),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(query).fetchall())


def replay(
    conn: psycopg.Connection,
    plan: TablePlan,
    split: Split,
    letters: list[dict],
    summer: Summer,
) -> Replayed:
    """Load dead-lettered rows again into ``plan``'s tables (after the user fixed the target
    or the mapping), each row with its child rows under a savepoint, in one transaction: a
    row that loads leaves ``bq2pg.dead_letters``; one that fails again stays, with its new
    error. A replayed row is recorded in the ledger of its run (stream ``replay:<stream>``),
    so that ``bq2pg verify`` counts it."""
    tables = plan.all_tables()
    encoders = {t.name: Encoder(t.columns) for t in tables}
    done = Replayed()
    try:
        with conn.transaction():
            for letter in letters:
                if letter["source_row"] is None:
                    done.failed[letter["id"]] = "no copy of the source row (an older bq2pg)"
                    continue
                rows = pa.ipc.open_stream(pa.py_buffer(letter["source_row"])).read_all()
                parts = split(rows)
                payloads = {t.name: encoders[t.name].encode(parts[t.name]) for t in tables}
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        targets = _parts(tables, parts, payloads, encoders, lambda t: t.name)
                        copy.write_parts(cur, targets)
                        cur.execute("DELETE FROM bq2pg.dead_letters WHERE id = %s", [letter["id"]])
                        if letter["run_id"] is not None:
                            ledger.record(cur, _replay_entry(letter, parts, summer))
                except psycopg.Error as exc:
                    if not is_row_error(exc):
                        raise
                    message = exc.diag.message_primary or str(exc)
                    conn.execute(
                        "UPDATE bq2pg.dead_letters SET sqlstate = %s, error = %s, context = %s "
                        "WHERE id = %s",
                        [exc.sqlstate, message, exc.diag.context, letter["id"]],
                    )
                    done.failed[letter["id"]] = message
                else:
                    done.loaded.append(letter["id"])
    except psycopg.Error as exc:
        raise translate(exc, f"replaying dead letters into {plan.qualified}") from exc
    finally:
        for e in encoders.values():
            e.close()
    return done


def _replay_entry(letter: dict, parts: dict[str, pa.Table], summer: Summer) -> ledger.ChunkRecord:
    """The ledger row of one replayed source row (its parent and child rows)."""
    offset = letter["row_offset"] or 0
    sums = {name: summer(name, rows) for name, rows in parts.items()}
    return ledger.ChunkRecord(
        run_id=letter["run_id"],
        stream=f"replay:{letter['stream']}",
        start=offset,
        end=offset + 1,
        rows={name: rows.num_rows for name, rows in parts.items()},
        nbytes=0,
        checksums={k: v for k, v in sums.items() if v is not None},
    )


def _where(target: str | None, run_id: str | None) -> sql.Composable:
    """``WHERE`` on target and/or run (values as literals), or nothing."""
    conditions = []
    if target:
        conditions.append(sql.SQL("target = {}").format(sql.Literal(target)))
    if run_id:
        conditions.append(sql.SQL("run_id = {}").format(sql.Literal(run_id)))
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as listed: where the row came from and why PostgreSQL refused it."""

    id: int
    run_id: uuid.UUID | None
    target: str
    stream: str | None
    row_offset: int | None
    sqlstate: str | None
    error: str
    created_at: dt.datetime


@dataclass(frozen=True)
class DeadLetterDetail(DeadLetter):
    """A dead letter with its error context (the column) and its raw row (may be personal
    data: shown only when asked for one letter)."""

    context: str | None = None
    raw: str = ""


#: Dead letters listed at most at once.
LISTING_LIMIT = 1000


def listing(
    conn: psycopg.Connection, *, target: str | None = None, run_id: str | None = None
) -> list[DeadLetter]:
    """Dead letters without their raw rows (which may hold personal data), newest first."""
    query = sql.SQL(
        "SELECT id, run_id, target, stream, row_offset, sqlstate, error, created_at "
        "FROM bq2pg.dead_letters {} ORDER BY id DESC LIMIT {}"
    ).format(_where(target, run_id), sql.Literal(LISTING_LIMIT))
    with conn.cursor(row_factory=class_row(DeadLetter)) as cur:
        return list(cur.execute(query).fetchall())


def show(conn: psycopg.Connection, letter_id: int) -> DeadLetterDetail | None:
    """One dead letter with its error context and raw row."""
    with conn.cursor(row_factory=class_row(DeadLetterDetail)) as cur:
        return cur.execute(
            "SELECT id, run_id, target, stream, row_offset, sqlstate, error, created_at, "
            "context, raw FROM bq2pg.dead_letters WHERE id = %s",
            [letter_id],
        ).fetchone()


def purge(conn: psycopg.Connection, *, target: str | None = None, run_id: str | None = None) -> int:
    """Delete dead letters (of ``target`` and/or ``run_id``, or all); the number deleted."""
    query = sql.SQL("DELETE FROM bq2pg.dead_letters {}").format(_where(target, run_id))
    return conn.execute(query).rowcount
