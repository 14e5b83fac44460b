"""The cost of the quality gate: ``bq2pg patents`` with its built-in rule set against the same
run with no rules, alternated round by round in one process on the same rows.

The rules are what ``bq2pg patents`` evaluates by default (``patents.quality``): 34 rules on the
model's 9 tables — one scan of ``publications`` for its row-level rules, a hash aggregate per
``unique`` rule, an anti-join per child table — run on the side tables before publishing.
"""

from __future__ import annotations

import dataclasses
import time
from statistics import median

import psycopg
from psycopg import sql

from bench.common import Sample
from bench.e2e import STREAMS, seeded
from bq2pg.patents import pipeline as patents
from bq2pg.patents import quality as patents_quality
from bq2pg.quality import rules

OFF = "bq2pg patents, no quality rules"
ON = "bq2pg patents, the built-in rule set"


def quality_e2e(url: str, rows: int, rounds: int) -> list[Sample]:
    """Rounds of no rules / the built-in rules, in turn, on the same rows."""
    schema = "bench_quality"
    samples: list[Sample] = []
    request = patents.PatentsRequest(
        database_url=url, schema=schema, streams=STREAMS, drop_tables=True
    )
    with seeded(rows, full_text=False) as (src, _):
        job = patents.build_job(src, request)
        bound, _ = rules.bind(patents_quality.builtin(job.plan), job.plan)
        jobs = {
            OFF: dataclasses.replace(job, profile=False),
            ON: dataclasses.replace(job, quality=tuple(bound), profile=False),
        }
        for _ in range(rounds):
            for name in (OFF, ON):
                started = time.perf_counter()
                result = patents.run_built(src, request, jobs[name])
                seconds = time.perf_counter() - started
                samples.append(Sample(name, result.rows_read, seconds, result.bytes))
                checked = f", {len(result.quality)} rules" if result.quality else ""
                print(f"  {name}: {seconds:.2f} s{checked}", flush=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return samples


def overhead_line(samples: list[Sample]) -> str:
    """The median seconds with the rules, and their cost against the run without."""

    def med(name: str) -> float:
        return median(s.seconds for s in samples if s.contender == name)

    return (
        f"- the built-in rule set: median {med(ON):.2f} s against {med(OFF):.2f} s without "
        f"rules, {100 * (med(ON) / med(OFF) - 1):+.1f} %"
    )


def main() -> None:
    """``python -m bench.quality [--rows N] [--rounds R]``: this section alone."""
    import argparse

    from bench.__main__ import report
    from bench.common import server

    parser = argparse.ArgumentParser(prog="python -m bench.quality")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    url, _ = server()
    samples = quality_e2e(url, args.rows, args.rounds)
    print(report(samples, "", f"{args.rows:,} publications, {args.rounds} rounds"))
    print(overhead_line(samples))


if __name__ == "__main__":
    main()
