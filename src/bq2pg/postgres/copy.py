"""The one COPY writer: encoded payloads into a table, framed for their format.

``arrow.encode`` is the formatter (Arrow columns to CSV or binary COPY rows); this module owns
the wire: the ``COPY ... FROM STDIN`` statement and, for binary, the stream's signature and
trailer around the rows. Chunk loads, dead-letter isolation and replay all write through it.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import psycopg
import pyarrow as pa
from psycopg import sql

from bq2pg.observe import tracing
from bq2pg.observe.log import get_logger
from bq2pg.plan import ddl
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres.connection import connect
from bq2pg.postgres.errors import translate

#: Start of every binary COPY stream (11-byte signature, flags, header-extension length).
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
#: End of every binary COPY stream (a field count of -1).
TRAILER = b"\xff\xff"

log = get_logger(__name__)


def write(
    cur: psycopg.Cursor,
    table: TablePlan,
    name: str,
    payloads: Sequence[pa.Buffer],
    fmt: str,
) -> None:
    """COPY ``payloads`` (rows encoded as ``fmt``: ``csv`` or ``binary``) into the table
    ``name`` of ``table``'s schema, with ``table``'s columns, in the cursor's transaction."""
    statement = ddl.copy_from_stdin(table, name=name, format=fmt)
    collection = f"{table.schema}.{name}"
    if log.isEnabledFor(10):  # DEBUG: the statement, never the rows
        log.debug("sql.statement", statement=statement.as_string(cur))
    with (
        tracing.span(
            f"COPY {collection}",
            tracing.CLIENT,
            **{
                "db.system.name": "postgresql",
                "db.namespace": cur.connection.info.dbname,
                "db.collection.name": collection,
                "db.operation.name": "COPY",
            },
        ),
        cur.copy(statement) as copy,
    ):
        if fmt == "binary":
            copy.write(SIGNATURE)
        for payload in payloads:
            copy.write(memoryview(payload))
        if fmt == "binary":
            copy.write(TRAILER)


@dataclass(frozen=True)
class Part:
    """Encoded rows of one table of a chunk, and where they go."""

    table: TablePlan
    #: The physical table COPY writes to (a side table of ``table``).
    name: str
    payloads: Sequence[pa.Buffer]
    #: ``csv`` or ``binary``, as the encoder wrote them.
    fmt: str


def write_parts(cur: psycopg.Cursor, parts: Sequence[Part]) -> None:
    """COPY every part that has rows, in the cursor's transaction."""
    for part in parts:
        if part.payloads:
            write(cur, part.table, part.name, part.payloads, part.fmt)


@contextlib.contextmanager
def copy_out(database_url: str, query: sql.Composable, what: str) -> Iterator[Iterator[bytes]]:
    """The blocks of ``COPY (query) TO STDOUT (FORMAT csv, HEADER true)``, read in a read-only
    transaction; a psycopg error becomes a bq2pg error saying ``what`` failed."""
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)").format(query)
    conn = connect(database_url)
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            with cur.copy(statement) as copy:
                yield (bytes(block) for block in copy)
    except psycopg.Error as exc:
        raise translate(exc, what) from exc
    finally:
        conn.close()
