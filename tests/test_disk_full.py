"""Disk full (RELIABILITY.md F4a, F4b): PostgreSQL's tablespace and the loader's output file.

F4a runs a real ``bq2pg copy`` process into a database whose tables live on a tablespace on a
small tmpfs (``faults/diskfull.py``), so that PostgreSQL fails with ``53100 disk_full`` mid-load.
Grown a moment later, the same run must finish exactly once; never grown, the run must give up
with exit code 4 and publish nothing, and a re-run after growing must resume it. F4b exports
features onto a tmpfs too small for the file. Everything needs root (``mount``): elsewhere the
tests skip and say why.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from faults import diskfull, harness

from bq2pg.bigquery.client import TableRef
from bq2pg.bigquery.seed import create_table, load_arrow
from bq2pg.patents import source as publications
from bq2pg.patents import synthetic as generate
from bq2pg.patents.pipeline import PatentsRequest, run

#: Publications behind the F4b export: their features file (~150 B a row as CSV, ~50 B as
#: Parquet) is many times the tmpfs below.
EXPORT_ROWS = 2000
#: The tmpfs under the F4b export.
EXPORT_DISK_BYTES = 32 * 1024


@pytest.fixture(scope="module")
def source_table(source, tmp_path_factory) -> tuple[str, dict[str, int]]:
    table_id = f"bq2pg-test.disk_{tmp_path_factory.mktemp('d').name[-6:]}.publications"
    ref = TableRef.parse(table_id)
    create_table(source, ref, publications.PUBLICATIONS)
    rows, planted = harness.plant(generate.generate(harness.ROWS, seed=41))  # bad rows too
    load_arrow(source, ref, rows)
    return table_id, harness.expectation(rows, planted)


#: Rows that must load; the planted ones must be dead-lettered, once each.
PLANTED = harness.ROWS // harness.PLANT_EVERY
LOADED = harness.ROWS - PLANTED


def assert_exactly_once(o: harness.Oracle) -> None:
    """Every good row once, unchanged; every planted row dead-lettered once."""
    assert (o.lost, o.duplicated, o.corrupted, o.rows) == (0, 0, 0, LOADED)
    assert (o.dead, o.dead_wrong) == (PLANTED, 0)


def trial(function, *args, **kwargs) -> diskfull.DiskTrial:
    try:
        return function(*args, **kwargs)
    except diskfull.Unsupported as exc:
        pytest.skip(f"no disk-full scenario here: {exc}")


def test_postgres_disk_full_grown_mid_load_finishes_the_same_run_exactly_once(
    emu, source_table, pg_url, pg_schema
):
    table_id, expected = source_table
    result = trial(
        diskfull.grow_trial, emu, pg_url, table_id, expected, pg_schema, random.Random(11)
    )
    (outcome,) = result.runs
    assert result.faults == 1, f"the disk never filled: {outcome}"
    assert diskfull.RETRY_WARNING in outcome.stderr, outcome.stderr  # a chunk failed, retried
    assert not result.hung, outcome.stderr
    assert outcome.returncode == 8, outcome.stderr  # 53100 retried; exit 8: dead letters
    assert result.statuses == {"succeeded": 1}
    assert_exactly_once(result.oracle)


def test_postgres_disk_full_never_grown_exits_4_publishes_nothing_and_a_rerun_resumes(
    emu, source_table, pg_url, pg_schema
):
    table_id, expected = source_table
    result = trial(
        diskfull.stuck_trial, emu, pg_url, table_id, expected, pg_schema, random.Random(12)
    )
    first, second = result.runs
    assert result.faults == 1, f"the disk never filled: {first}"
    assert not first.hung, f"the loader did not give up on a full disk: {first.stderr}"
    assert first.returncode == 4, first.stderr
    assert "SQLSTATE 53100" in first.stderr and "No space left on device" in first.stderr
    assert "Traceback" not in first.stderr
    assert result.published_early == 0  # the target was never swapped in
    assert result.durable[0] > 0  # chunks committed before the disk filled were kept
    assert second.returncode == 8, second.stderr
    assert "run.resumed" in second.stderr
    assert result.statuses == {"succeeded": 1}  # the re-run finished the same run
    assert_exactly_once(result.oracle)


def test_negative_control_a_loader_that_gives_up_on_disk_full_is_caught(
    emu, source_table, pg_url, pg_schema
):
    table_id, expected = source_table
    result = trial(
        diskfull.grow_trial, emu, pg_url, table_id, expected, pg_schema, random.Random(13),
        broken=True,
    )  # fmt: skip
    (outcome,) = result.runs
    assert result.faults == 1, f"the disk never filled: {outcome}"
    assert outcome.returncode == 4, outcome.stderr
    assert result.oracle.lost > 0, "the oracle missed the broken loader"


@pytest.fixture(scope="module")
def features_model(source, pg_url, tmp_path_factory) -> str:
    """The patents model of EXPORT_ROWS generated publications; its schema."""
    schema = f"diskfeat_{tmp_path_factory.mktemp('m').name[-6:]}"
    table_id = f"bq2pg-test.{schema}.publications"
    ref = TableRef.parse(table_id)
    create_table(source, ref, publications.PUBLICATIONS)
    load_arrow(source, ref, generate.generate(EXPORT_ROWS, seed=43))
    run(source, PatentsRequest(database_url=pg_url, source=table_id, schema=schema))
    return schema


def export(pg_url: str, schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    args = ["export", "features", "--to", str(path), "--database", pg_url, "--schema", schema]
    return subprocess.run(
        [sys.executable, "-m", "bq2pg", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module", params=[".csv", ".parquet"])
def full_disk_export(
    request, pg_url, features_model
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``bq2pg export features`` onto a tmpfs too small for the file: the process, and the
    files left on the tmpfs afterwards."""
    try:
        with diskfull.small_disk(EXPORT_DISK_BYTES) as disk:
            done = export(pg_url, features_model, disk / f"features{request.param}")
            return done, sorted(p.name for p in disk.iterdir())
    except diskfull.Unsupported as exc:
        pytest.skip(f"no small disk here: {exc}")


def test_export_onto_a_full_disk_fails_and_says_the_disk_is_full(full_disk_export):
    done, _ = full_disk_export
    assert done.returncode != 0, "the export reported success on a full disk"
    assert "No space left on device" in done.stderr, done.stderr


# every failure is one "error: ..." line and a documented exit code, never a traceback
def test_export_onto_a_full_disk_reports_one_error_line_not_a_traceback(full_disk_export):
    done, _ = full_disk_export
    assert "Traceback" not in done.stderr
    assert any(line.startswith("error: ") for line in done.stderr.splitlines()), done.stderr


# the export is written beside --to and renamed only when complete: no truncated CSV or
# footer-less Parquet file is left behind
def test_export_onto_a_full_disk_leaves_no_half_written_file(full_disk_export):
    _, left = full_disk_export
    assert left == [], f"a half-written file was left behind: {left}"
