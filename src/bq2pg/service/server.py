"""Running the service: the API on uvicorn (``bq2pg serve``), with a worker thread beside it
when asked (``--with-worker``), or a worker alone (``bq2pg worker``), until SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import threading
from typing import Any

import uvicorn

from bq2pg.config import jobs as config_jobs
from bq2pg.observe.log import get_logger
from bq2pg.service.app import create_app
from bq2pg.service.settings import Settings
from bq2pg.service.worker import Worker

log = get_logger(__name__)


def serve(
    settings: Settings,
    cfg: config_jobs.Config,
    *,
    with_worker: bool = False,
    concurrency: int = 1,
    tls: dict[str, Any] | None = None,
) -> None:
    """Serve the API until stopped; with ``with_worker``, run a worker in this process too
    (stopped, its runs left resumable, when the server stops)."""
    app = create_app(settings, cfg)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False,
        proxy_headers=False, server_header=False, timeout_graceful_shutdown=10,
        limit_concurrency=max(100, settings.max_event_streams * 2), **(tls or {}),
    )  # fmt: skip
    server = uvicorn.Server(config)
    stop = threading.Event()
    thread = None
    if with_worker:
        worker = Worker(settings, cfg, concurrency)
        thread = threading.Thread(target=worker.run, args=(stop,), name="bq2pg-worker",
                                  daemon=True)  # fmt: skip
        thread.start()
    scheme = "https" if tls else "http"
    log.info("api.serving", url=f"{scheme}://{settings.host}:{settings.port}",
             worker=with_worker)  # fmt: skip
    try:
        server.run()
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=90)


def work(settings: Settings, cfg: config_jobs.Config, concurrency: int) -> None:
    """Run a worker until SIGINT or SIGTERM (the runs in flight stop at a chunk boundary and
    stay resumable)."""
    stop = threading.Event()

    def stopping(signum: int, _: Any) -> None:
        log.info("worker.stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    Worker(settings, cfg, concurrency).run(stop)
