"""``bq2pg demo --serve``: the emulator seeded with generated patents, the embedded PostgreSQL,
and the API with a worker, an admin key printed, until Ctrl-C (then everything it started
stops)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import platformdirs
import yaml

from bq2pg.bigquery import client as source
from bq2pg.config import jobs as config_jobs
from bq2pg.local import demo as local_demo
from bq2pg.local import embedded, emulator
from bq2pg.service import keys, server, settings


def run(
    *, rows: int, database_url: str | None, host: str, port: int,
    announce: Callable[[str, str, Path], None], work_dir: Path | None = None,
) -> None:  # fmt: skip
    """Start everything, call ``announce(url, key, config_path)``, serve until stopped."""
    work = work_dir or Path(platformdirs.user_cache_dir("bq2pg"))
    started_pg = None
    if database_url is None:
        started_pg = embedded.start(work / "postgres")
        database_url = started_pg.url
    try:
        with emulator.start(log_path=work / "emulator.log") as emu:
            src = source.Source(project="patents-public-data", rest_endpoint=emu.rest_url,
                                storage_endpoint=emu.grpc_endpoint, emulator=True)  # fmt: skip
            local_demo.seed(src, rows)
            path = work / "bq2pg-demo.yaml"
            document = {
                "targets": {"demo": {"url": database_url}},
                "sources": {"emulator": {"project": "patents-public-data",
                                         "bigquery_endpoint": emu.rest_url,
                                         "bigquery_storage_endpoint": emu.grpc_endpoint,
                                         "emulator": True}},
                "defaults": {"to": "demo", "bigquery": "emulator"},
                "jobs": {
                    "patents": {"kind": "patents", "drop_tables": True},
                    "patents-nightly": {"kind": "patents", "schema": "patents_nightly",
                                        "schedule": "0 3 * * *"},
                },
                "service": {"database": "demo", "host": host, "port": port},
            }  # fmt: skip
            path.write_text(yaml.safe_dump(document, sort_keys=False))
            os.chmod(path, 0o600)
            cfg = config_jobs.load(str(path))
            found = settings.load(cfg)
            _, key = keys.create(found.database_url, "demo admin", "admin")
            announce(f"http://{found.host}:{found.port}", key, path)
            server.serve(found, cfg, with_worker=True, concurrency=2)
    finally:
        if started_pg is not None:
            with contextlib.suppress(Exception):
                embedded.stop(work / "postgres")
