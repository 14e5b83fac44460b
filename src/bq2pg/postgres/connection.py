"""Write to PostgreSQL: connections with pinned settings, COPY, and publishing.

The writer half of loading (``encode`` is the formatter). Connections run in autocommit mode
with explicit ``conn.transaction()`` blocks, so a block is a real transaction and never a
savepoint (RELIABILITY.md c.6), and pin ``TimeZone``, ``DateStyle``, ``IntervalStyle`` and the
client encoding so that values are stored the same whatever the server's defaults.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from bq2pg.arrow import binary
from bq2pg.config.settings import redact
from bq2pg.errors import TargetError, TargetMismatchError, TransientTargetError
from bq2pg.plan import ddl
from bq2pg.plan.tables import Column, TablePlan, normalize_identifier

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds one chunk's COPY may take before its connection counts as dead (a half-open
#: connection hangs forever otherwise). Generous: a 32 MB chunk takes about a second on a
#: healthy server. ``BQ2PG_WRITE_TIMEOUT_S`` overrides it (the fault tests use 3 s).
WRITE_TIMEOUT_S = float(os.environ.get("BQ2PG_WRITE_TIMEOUT_S", 120))

#: Settings pinned on every connection (RELIABILITY.md invariant 8).
SESSION_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres"
#: Seconds to wait for a connection; a black-holed server must not hang a run forever.
CONNECT_TIMEOUT_S = 15
#: TCP keepalives and a user timeout, so that a peer that vanished (not one a middlebox keeps
#: ACKing) breaks the connection within about a minute instead of hanging a run; a URL's own
#: settings win. Ignored on Unix sockets.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
#: SQLSTATE classes worth a retry: connection exceptions, insufficient resources (disk full),
#: operator intervention (server shutting down or starting).
TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57")

LOAD_SUFFIX = "__bq2pg_new"
STAGE_SUFFIX = "__bq2pg_stage"


class RowRejectedError(TargetError):
    """PostgreSQL rejected a row's data; the writer isolates it (``deadletter``)."""


def deadletter_classes(exc: psycopg.Error) -> bool:
    """True for SQLSTATE classes that name a row's data: 22, 23 and 54."""
    return (getattr(exc, "sqlstate", None) or "")[:2] in ("22", "23", "54")


#: A failed connection carries no SQLSTATE: libpq's messages that mean the server or the
#: client refused it (wrong password, pg_hba, unknown database or role, TLS certificate), so
#: that retrying cannot help.
REFUSED_AT_CONNECT = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "permission denied",
    "certificate",
    "channel binding",
    "does not support ssl",
    "invalid sslmode",
    "invalid connection option",
    "invalid uri",
    "authentication method",
)
#: Hints added to errors by SQLSTATE.
HINTS = {
    "53100": "free space on the PostgreSQL server's disk, then run the same command again "
    "(it resumes from its ledger)",
}


def translate(exc: psycopg.Error, what: str) -> TargetError:
    """One place where psycopg errors become bq2pg errors (messages are redacted)."""
    state = getattr(exc, "sqlstate", None) or ""
    message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
    text = f"{what}: {message}" + (f" (SQLSTATE {state})" if state else "")
    if state in HINTS:
        text += f"; {HINTS[state]}"
    if isinstance(exc, psycopg.OperationalError) and not state.startswith("28"):
        if not state and any(m in str(exc).lower() for m in REFUSED_AT_CONNECT):
            return TargetError(text)
        return TransientTargetError(text)
    if state[:2] in TRANSIENT_SQLSTATE_CLASSES:
        return TransientTargetError(text)
    return TargetError(text)


def connect(url: str) -> psycopg.Connection:
    """An autocommit connection with pinned session settings and a UTF8 server check.

    The URL's own ``options`` are kept; the pinned settings come after them, so they win.
    """
    try:
        own = conninfo_to_dict(url).get("options")
    except psycopg.Error as exc:
        raise translate(exc, "reading the PostgreSQL URL") from None
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            options=f"{own} {SESSION_OPTIONS}" if own else SESSION_OPTIONS,
            client_encoding="UTF8",
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="bq2pg",
            **{k: v for k, v in KEEPALIVES.items() if f"{k}=" not in url},
        )
    except psycopg.Error as exc:
        raise translate(exc, "connecting to PostgreSQL") from None
    encoding = conn.execute("SHOW server_encoding").fetchone()
    if not encoding or encoding[0] != "UTF8":
        conn.close()
        raise TargetError(
            f"the PostgreSQL database uses encoding {encoding[0] if encoding else '?'}; bq2pg "
            "needs UTF8 so that text is stored as BigQuery sent it (create the database with "
            "ENCODING 'UTF8')"
        )
    return conn


def with_deadline(conn: psycopg.Connection, seconds: float, what: str, call: Callable[[], T]) -> T:
    """``call()``, abandoning ``conn`` if it takes longer than ``seconds``.

    A half-open connection (a middlebox that keeps ACKing, a peer gone silent) blocks libpq
    forever, and neither ``statement_timeout`` (its error never arrives) nor keepalives help
    (RELIABILITY.md c.5). A timer shuts the socket down from outside, which makes the blocked
    call fail; the caller then reconnects.
    """
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        with contextlib.suppress(OSError, psycopg.Error):
            sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        return call()
    except (psycopg.Error, TargetError) as exc:
        if fired.is_set():
            raise TransientTargetError(
                f"{what}: no answer from PostgreSQL for {seconds:.0f} s; connection abandoned"
            ) from exc
        raise
    finally:
        timer.cancel()


def execute(conn: psycopg.Connection, statements: Iterable[sql.Composed], what: str) -> None:
    """Run ``statements`` in one transaction."""
    try:
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
    except psycopg.Error as exc:
        raise translate(exc, what) from exc


#: The ledger row of a chunk: run, stream, start and end offsets, rows per table, bytes,
#: content checksum per table (``checksum``; empty when not computed).
LedgerRow = tuple[object, str, int, int, dict[str, int], int, dict[str, int]]

#: Negative control of the fault-injection suite (RELIABILITY.md invariant 10): with this
#: variable set, the ledger row is committed in a transaction of its own after the data, the
#: bug the suite's oracle must catch as duplicated rows. Never set it in production.
SPLIT_LEDGER_ENV = "BQ2PG_FAULT_SPLIT_LEDGER"


def copy_chunk(
    conn: psycopg.Connection,
    parts: list[tuple[TablePlan, str, list[pa.Buffer], str]],
    ledger: LedgerRow | None = None,
) -> None:
    """COPY encoded payloads into their tables and record the chunk, all in one transaction.

    ``parts`` holds ``(plan, physical table name, payloads, format)``; the parent's rows and
    their child rows commit together, with the chunk's ledger row when there is one.
    """
    split = ledger is not None and bool(os.environ.get(SPLIT_LEDGER_ENV))
    try:
        with conn.transaction(), conn.cursor() as cur:
            for plan, name, payloads, fmt in parts:
                with cur.copy(ddl.copy_from_stdin(plan, name=name, format=fmt)) as copy:
                    if fmt == "binary":
                        copy.write(binary.SIGNATURE)
                    for payload in payloads:
                        copy.write(memoryview(payload))
                    if fmt == "binary":
                        copy.write(binary.TRAILER)
            if ledger is not None and not split:
                record(cur, ledger)
        if split:
            time.sleep(0.5)  # widen the window between the two commits, so kills land in it
            with conn.transaction(), conn.cursor() as cur:
                record(cur, ledger)  # type: ignore[arg-type]
    except psycopg.Error as exc:
        names = ", ".join(part[1] for part in parts)
        if deadletter_classes(exc):
            raise RowRejectedError(f"COPY into {names}: a row was rejected") from exc
        raise translate(exc, f"COPY into {names}") from exc


def committed_chunk(
    conn: psycopg.Connection, run_id: object, stream: str, start: int
) -> tuple[dict[str, int], int]:
    """Rows per table and dead letters the ledger holds for a committed chunk."""
    row = conn.execute(
        "SELECT rows, dead_letters FROM bq2pg.chunks WHERE run_id = %s AND stream = %s "
        "AND start_offset = %s",
        [run_id, stream, start],
    ).fetchone()
    if row is None:
        raise TargetError(f"the ledger has no chunk of {stream} at row {start}")
    return {k: int(v) for k, v in row[0].items()}, int(row[1])


def chunk_committed(conn: psycopg.Connection, run_id: object, stream: str, start: int) -> bool:
    """True when the ledger holds the chunk of ``stream`` starting at row ``start``."""
    row = conn.execute(
        "SELECT 1 FROM bq2pg.chunks WHERE run_id = %s AND stream = %s AND start_offset = %s",
        [run_id, stream, start],
    ).fetchone()
    return row is not None


def record(cur: psycopg.Cursor | psycopg.Connection, ledger: LedgerRow, dead: int = 0) -> None:
    """Insert a chunk's ledger row (inside the chunk's transaction)."""
    run_id, stream, start, end, rows, nbytes, checksums = ledger
    sums = Jsonb(checksums) if checksums else None
    cur.execute(
        "INSERT INTO bq2pg.chunks (run_id, stream, start_offset, end_offset, rows, bytes, "
        "dead_letters, checksums) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        [run_id, stream, start, end, Jsonb(rows), nbytes, dead, sums],
    )


def existing_columns(conn: psycopg.Connection, schema: str, name: str) -> dict[str, str] | None:
    """Column name -> formatted type of an existing table, or None when it does not exist."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        [sql.Identifier(schema, name).as_string(conn)],
    ).fetchall()
    if not rows:
        exists = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", [sql.Identifier(schema, name).as_string(conn)]
        ).fetchone()
        return {} if exists and exists[0] else None
    return {r[0]: r[1] for r in rows}


_TYPE_SPELLINGS = {
    "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "time": "time without time zone",
    "timestamptz[]": "timestamp with time zone[]",
    "timestamp[]": "timestamp without time zone[]",
    "time[]": "time without time zone[]",
}


def check_rls(conn: psycopg.Connection, plan: TablePlan) -> None:
    """Refuse a target with row-level security: COPY cannot load it (PostgreSQL refuses), and
    replacing it would drop its policies."""
    rls = conn.execute(
        "SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass(%s)",
        [sql.Identifier(plan.schema, plan.name).as_string(conn)],
    ).fetchone()
    if rls and rls[0]:
        raise TargetMismatchError(
            f"target table {plan.qualified} has row-level security enabled: COPY cannot load "
            "it, and replacing it would drop its policies; load into another table, or "
            "disable RLS for the load"
        )


def check_compatible(conn: psycopg.Connection, plan: TablePlan) -> list[Column] | None:
    """How the existing target fits ``plan``: None when it does not exist, else the source's
    new columns it lacks (nullable ones, to add: RELIABILITY.md b.34).

    Columns the target has and the source no longer sends are kept (new rows get NULL);
    a renamed column looks like one dropped and one added.

    Raises:
        TargetMismatchError: a column has another type, a missing column is NOT NULL, or the
            table has row-level security.
    """
    check_rls(conn, plan)
    found = existing_columns(conn, plan.schema, plan.name)
    if found is None:
        return None
    problems, added = [], []
    for c in plan.columns:
        pg_type = _TYPE_SPELLINGS.get(c.pg_type, c.pg_type)
        if c.name not in found:
            if c.not_null:
                problems.append(f"column {c.name!r} ({pg_type} NOT NULL) is missing")
            else:
                added.append(c)
        elif found[c.name].replace(", ", ",") != pg_type.replace(", ", ","):
            problems.append(f"column {c.name!r} is {found[c.name]}, the source needs {pg_type}")
    if problems:
        raise TargetMismatchError(
            f"target table {plan.qualified} does not match the source: "
            + "; ".join(problems)
            + ". Use --drop to recreate it, or --mode replace"
        )
    return added


def add_columns(plan: TablePlan, columns: list[Column]) -> sql.Composed:
    """``ALTER TABLE ... ADD COLUMN`` for the source's new (nullable) columns."""
    return sql.SQL("ALTER TABLE {} {}").format(
        ddl.ident(plan.schema, plan.name),
        sql.SQL(", ").join(
            sql.SQL("ADD COLUMN {} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type))
            for c in columns
        ),
    )


def side_name(plan: TablePlan, suffix: str) -> str:
    """The name of a side table (load or staging) of ``plan``'s table."""
    return normalize_identifier(plan.name + suffix)


def publish_replace(
    conn: psycopg.Connection, plan: TablePlan, also: Iterable[sql.Composed] = ()
) -> None:
    """Swap the freshly loaded tables in place of the targets, in one transaction.

    ``also`` runs in the same transaction (the run's status), so that a publish and its record
    commit together.
    """
    statements: list[sql.Composed] = []
    for table in plan.all_tables():
        statements.append(ddl.drop_table(table.schema, table.name))
    for table in plan.all_tables():
        new = side_name(table, LOAD_SUFFIX)
        statements.append(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                ddl.ident(table.schema, new), sql.Identifier(table.name)
            )
        )
        if table.key:
            statements.append(
                sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    ddl.ident(table.schema, table.name),
                    sql.Identifier(normalize_identifier(new + "_pkey")),
                    sql.Identifier(normalize_identifier(table.name + "_pkey")),
                )
            )
    execute(conn, [*statements, *also], f"publishing {plan.qualified}")


def primary_key(table: TablePlan, physical: str) -> sql.Composed:
    """``ADD CONSTRAINT <physical>_pkey PRIMARY KEY (...)`` on a load table."""
    return sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
        ddl.ident(table.schema, physical),
        sql.Identifier(normalize_identifier(physical + "_pkey")),
        sql.SQL(", ").join(sql.Identifier(k) for k in table.key),
    )


def publish_merge(
    conn: psycopg.Connection, plan: TablePlan, also: Iterable[sql.Composed] = ()
) -> int:
    """Upsert the staged rows into the targets on the key, in one transaction.

    Rows sharing a key inside the staged data collapse to one (BigQuery keys are not
    enforced); child rows of every merged parent are replaced. Returns the number of
    duplicate keys collapsed.
    """
    stage = side_name(plan, STAGE_SUFFIX)
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in plan.key)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in plan.column_names)
    updates = [c for c in plan.column_names if c not in plan.key]
    on_conflict = (
        sql.SQL("DO UPDATE SET {}").format(
            sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates
            )
        )
        if updates
        else sql.SQL("DO NOTHING")
    )
    try:
        with conn.transaction():
            row = conn.execute(
                sql.SQL("SELECT count(*) - count(DISTINCT ({})) FROM {}").format(
                    keys, ddl.ident(plan.schema, stage)
                )
            ).fetchone()
            duplicates = int(row[0]) if row else 0
            conn.execute(
                sql.SQL(
                    "INSERT INTO {target} ({cols}) SELECT DISTINCT ON ({keys}) {cols} "
                    "FROM {stage} ORDER BY {keys} ON CONFLICT ({keys}) {action}"
                ).format(
                    target=ddl.ident(plan.schema, plan.name),
                    cols=cols,
                    keys=keys,
                    stage=ddl.ident(plan.schema, stage),
                    action=on_conflict,
                )
            )
            for child in plan.children:
                _merge_child(conn, plan, child, stage)
            for statement in also:  # before the staging tables go (watermarks read them)
                conn.execute(statement)
            for table in plan.all_tables():
                conn.execute(ddl.drop_table(table.schema, side_name(table, STAGE_SUFFIX)))
    except psycopg.Error as exc:
        raise translate(exc, f"merging into {plan.qualified}") from exc
    return duplicates


def publish_append(
    conn: psycopg.Connection, plan: TablePlan, also: Iterable[sql.Composed] = ()
) -> None:
    """Move the staged rows into the targets and drop the staging tables, in one transaction.

    A run's rows appear in the target all at once, with the run's record, or not at all: an
    interrupted append that is never resumed leaves nothing behind in the target.
    """
    statements: list[sql.Composed] = []
    for table in plan.all_tables():
        stage = side_name(table, STAGE_SUFFIX)
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names)
        statements.append(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                ddl.ident(table.schema, table.name), cols, cols, ddl.ident(table.schema, stage)
            )
        )
    statements += also
    statements += [ddl.drop_table(t.schema, side_name(t, STAGE_SUFFIX)) for t in plan.all_tables()]
    execute(conn, statements, f"appending to {plan.qualified}")


def _merge_child(conn: psycopg.Connection, plan: TablePlan, child: TablePlan, stage: str) -> None:
    parent_keys = child.parent_key
    child_stage = side_name(child, STAGE_SUFFIX)
    match = sql.SQL(" AND ").join(
        sql.SQL("c.{} = s.{}").format(sql.Identifier(ck), sql.Identifier(pk))
        for ck, pk in zip(parent_keys, plan.key, strict=True)
    )
    conn.execute(
        sql.SQL("DELETE FROM {child} c USING {stage} s WHERE {match}").format(
            child=ddl.ident(child.schema, child.name),
            stage=ddl.ident(plan.schema, stage),
            match=match,
        )
    )
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in child.column_names)
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in child.key)
    conn.execute(
        sql.SQL(
            "INSERT INTO {child} ({cols}) SELECT DISTINCT ON ({keys}) {cols} FROM {stage} "
            "ORDER BY {keys}"
        ).format(
            child=ddl.ident(child.schema, child.name),
            cols=cols,
            keys=keys,
            stage=ddl.ident(child.schema, child_stage),
        )
    )
