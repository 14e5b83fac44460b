"""bq2pg as a service: the REST API (``bq2pg serve``), the workers that run queued runs
(``bq2pg worker``), schedules, API keys and the web dashboard (``/ui``).

The queue lives in PostgreSQL (``bq2pg.queue``, :mod:`bq2pg.state.queue`), so no other server
is needed; routes and workers call the same library functions as the command line
(:mod:`bq2pg.runner`, :mod:`bq2pg.admin`).
"""
