"""Verification: the stored rows against the ledger, by count and by content checksum.

One comparison (:func:`compare`, pure) serves both verifiers: a run's, before it publishes
(:func:`verify_run`: its side tables against its own ledger; a mismatch publishes nothing),
and ``bq2pg verify`` (:func:`verify_target`: a published table against the ledger of the runs
that wrote it).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from bq2pg.errors import NothingToVerifyError, VerificationError
from bq2pg.observe import metrics
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres import postload
from bq2pg.postgres.target import Mode, physical
from bq2pg.quality import checksum
from bq2pg.state import ledger, runs

#: The status of a table whose rows were merged (upserts): counts cannot prove them.
MERGED = "merged: counts cannot prove it"


@dataclass(frozen=True)
class TableCheck:
    """One table's rows and checksum against the ledger's.

    Attributes:
        table: the table (``schema.name`` for ``bq2pg verify``, the plan's name for a run).
        ledger: rows the ledger committed (None: not checkable, see ``status``).
        rows: rows stored.
        expected: the ledger's content checksum (None: not compared).
        found: the stored rows' content checksum (None: not compared).
        status: ``ok (count)``, ``ok (count, checksum)``, ``MISMATCH``,
            ``MISMATCH (checksum)``, or why the table cannot be checked.
    """

    table: str
    ledger: int | None
    rows: int | None
    expected: int | None = None
    found: int | None = None
    status: str = ""

    @property
    def ok(self) -> bool:
        return self.status.startswith("ok") or self.status == MERGED

    @property
    def checksummed(self) -> bool:
        return self.status == "ok (count, checksum)"

    @property
    def problem(self) -> str:
        """What is wrong, in words ("" when nothing is)."""
        if self.status == "MISMATCH":
            return f"{self.table}: {self.rows:,} rows, the ledger committed {self.ledger:,}"
        if self.status == "MISMATCH (checksum)":
            return (
                f"{self.table}: the content checksum of the stored rows differs from the "
                "ledger's (values changed between reading and storing)"
            )
        return ""


def compare(
    table: str, ledger_rows: int, rows: int, expected: int | None, found: int | None
) -> TableCheck:
    """Compare a table's stored rows (and checksum) with the ledger's; a checksum is compared
    only when both sides have one."""
    if rows != ledger_rows:
        status = "MISMATCH"
    elif expected is not None and found is not None and expected != found:
        status = "MISMATCH (checksum)"
    elif expected is not None and found is not None:
        status = "ok (count, checksum)"
    else:
        status = "ok (count)"
    return TableCheck(table, ledger_rows, rows, expected, found, status)


def _scan(
    conn: psycopg.Connection, schema: str, name: str, columns: Sequence[tuple[str, str]]
) -> tuple[int, int | None]:
    """(rows, checksum or None) of a stored table."""
    row = conn.execute(checksum.server_query(schema, name, columns)).fetchone()
    if row is None:
        return 0, None
    return int(row[0]), (int(row[1]) if columns and row[1] is not None else None)


def checksum_columns(plan: TablePlan) -> dict[str, list[tuple[str, str]]]:
    """Per table of ``plan``, the (name, type) of the columns its checksum covers."""
    return {
        t.name: [(c.name, c.pg_type) for c in t.columns if checksum.kind(c.pg_type)]
        for t in plan.all_tables()
    }


def verify_run(
    conn: psycopg.Connection,
    database_url: str,
    plan: TablePlan,
    mode: Mode,
    run_id: uuid.UUID,
    *,
    with_checksums: bool,
    lanes: int,
    deadline: float,
) -> list[TableCheck]:
    """The side tables of a run hold, per table, the rows its ledger committed: as many, and
    (``with_checksums``) with the same content checksum. Scans run on up to ``lanes``
    connections, largest table first.

    Raises:
        VerificationError: a table's count or checksum differs from the ledger's.
    """
    committed = ledger.committed(conn, run_id).rows
    sums: dict[str, int] = {}
    if (
        with_checksums
        and conn.info.server_version >= checksum.MIN_SERVER_VERSION
        # a run begun by an older bq2pg and resumed by this one holds checksums of two forms
        and runs.checksum_form(conn, run_id) == checksum.FORM
    ):
        sums = ledger.checksums(conn, [run_id])
    columns = checksum_columns(plan)
    tables = sorted(plan.all_tables(), key=lambda t: -committed.get(t.name, 0))

    def scan(scanner: psycopg.Connection, t: TablePlan) -> tuple[int, int | None]:
        covered = columns[t.name] if t.name in sums else []
        return _scan(scanner, t.schema, physical(mode, t), covered)

    found = postload.spread(
        database_url, tables, scan, lanes=min(lanes, len(tables)), what="verifying",
        deadline=deadline,
    )  # fmt: skip
    checks = [
        compare(t.name, committed.get(t.name, 0), rows, sums.get(t.name), content)
        for t, (rows, content) in zip(tables, found, strict=True)
    ]
    problems = [c.problem for c in checks if not c.ok]
    if problems:
        metrics.VERIFICATION_MISMATCHES.labels(plan.qualified).inc(len(problems))
        raise VerificationError(
            f"verification of {plan.qualified} failed, nothing was published: "
            + "; ".join(problems),
            table=plan.qualified,
        )
    return checks


def verify_target(conn: psycopg.Connection, target: str) -> list[TableCheck]:
    """Row counts and content checksums of ``target``'s tables against the ledger of the runs
    that wrote them.

    A replaced table must hold exactly its last run's rows; an appended one the rows of every
    run since the last replace. Merged tables cannot be checked this way (upserts) and are
    reported as such. Checksums are compared when every one of those runs computed them over
    the same columns, in this bq2pg's canonical form.

    Raises:
        NothingToVerifyError: no finished run has loaded ``target``.
    """
    history = runs.succeeded(conn, target)
    if not history:
        raise NothingToVerifyError(f"no finished run has loaded {target}", table=target)
    runs_since: list[uuid.UUID] = []
    layouts = []
    for run_id, mode, columns, form in history:
        if mode == "merge":
            return [TableCheck(target, None, None, status=MERGED)]
        runs_since.append(run_id)
        layouts.append(columns if form == checksum.FORM else None)
        if mode == "replace":
            break
    committed = ledger.rows_of(conn, runs_since)
    layout = layouts[0] if all(other == layouts[0] for other in layouts) else None
    sums = ledger.checksums(conn, runs_since) if layout is not None else {}
    if conn.info.server_version < checksum.MIN_SERVER_VERSION:
        sums = {}
    schema = target.split(".", 1)[0]
    report = []
    for table, wanted in sorted(committed.items()):
        columns = [tuple(c) for c in layout.get(table, [])] if layout and table in sums else []
        rows, content = _scan(conn, schema, table, columns)
        report.append(compare(f"{schema}.{table}", wanted, rows, sums.get(table), content))
    return report
