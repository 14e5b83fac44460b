"""The cost of observability: ``bq2pg patents`` with JSON logs, served metrics and OTLP traces
on, against the same run with all of them off, alternated round by round in one process.

"On" is what an operator turns on: JSON log lines at INFO (to a file), ``--metrics-port`` (a
scraper reads it every second), and traces exported over OTLP/HTTP (batched) to a local
receiver that accepts and discards them. "Off" is the default: no handler configured, nothing
served, no-op spans. The counters themselves are updated in both (they cannot be turned off),
so the difference is what serving, logging and tracing add.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psycopg
from psycopg import sql

from bench.common import Sample
from bench.e2e import STREAMS, seeded
from bq2pg.observe import log as logs
from bq2pg.observe import metrics, tracing
from bq2pg.patents import pipeline as patents

OFF = "bq2pg patents, observability off"
ON = "bq2pg patents, JSON logs + metrics served + OTLP traces"
LOGS_METRICS = "bq2pg patents, JSON logs + metrics served"


class _Discard(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scraping(port: int, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()


def observability_e2e(url: str, rows: int, rounds: int) -> list[Sample]:
    """Rounds of off / logs + metrics / logs + metrics + traces, in turn, on the same rows."""
    schema = "bench_observe"
    samples: list[Sample] = []
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Discard)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = _free_port()
    metrics.serve(port, addr="127.0.0.1")
    stop = threading.Event()
    threading.Thread(target=_scraping, args=(port, stop), daemon=True).start()
    request = patents.PatentsRequest(
        database_url=url, schema=schema, streams=STREAMS, drop_tables=True
    )
    with seeded(rows, full_text=False) as (src, _), tempfile.TemporaryDirectory() as work:
        for _ in range(rounds):
            for name in (OFF, LOGS_METRICS, ON):
                log_file = (Path(work) / "log.jsonl").open("w")
                provider = None
                if name != OFF:
                    logs.configure(fmt="json", level="info", stream=log_file)
                if name == ON:
                    provider = tracing.configure(
                        f"http://127.0.0.1:{receiver.server_address[1]}", environ={}
                    )
                try:
                    started = time.perf_counter()
                    result = patents.run(src, request)
                    seconds = time.perf_counter() - started
                finally:
                    if provider is not None:
                        provider.shutdown()
                        tracing.use(None)
                    root = logging.getLogger()
                    for handler in list(root.handlers):
                        root.removeHandler(handler)
                    root.setLevel(logging.WARNING)
                    log_file.close()
                samples.append(Sample(name, result.rows_read, seconds, result.bytes))
                print(f"  {name}: {result.rows_read / seconds:,.0f} rows/s", flush=True)
    stop.set()
    receiver.shutdown()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return samples


def overhead_lines(samples: list[Sample]) -> str:
    """The median seconds of each setting and its cost against "off"."""
    from statistics import median

    def med(name: str) -> float:
        return median(s.seconds for s in samples if s.contender == name)

    off = med(OFF)
    return "\n".join(
        f"- {name}: median {med(name):.2f} s, {100 * (med(name) / off - 1):+.1f} % against off"
        for name in (LOGS_METRICS, ON)
    )


def main() -> None:
    """``python -m bench.observability [--rows N] [--rounds R]``: this section alone."""
    import argparse

    from bench.__main__ import report
    from bench.common import server

    parser = argparse.ArgumentParser(prog="python -m bench.observability")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url, _ = server()
    samples = observability_e2e(url, args.rows, args.rounds)
    print(report(samples, "", f"{args.rows:,} publications, {args.rounds} rounds"))
    print(overhead_lines(samples))


if __name__ == "__main__":
    main()
