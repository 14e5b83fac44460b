"""``bq2pg serve``, ``bq2pg worker`` and ``bq2pg api-key create|revoke|list``: the service."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from bq2pg.cli import configured
from bq2pg.cli.configured import ConfigOpt, EnvOpt
from bq2pg.cli.shared import err, out

app = typer.Typer(rich_markup_mode=None)
keys_app = typer.Typer(
    help="The REST API's keys (viewer, operator, admin).", no_args_is_help=True,
    rich_markup_mode=None,
)  # fmt: skip

HostOpt = Annotated[
    str | None,
    typer.Option(help="The address to listen on [default: service.host, else 127.0.0.1]."),
]
PortOpt = Annotated[
    int | None, typer.Option(help="The port [default: service.port, else 8000].", min=0)
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", help="Runs this worker executes at once.", min=1)
]


def _settings(config: str | None, env: str | None, **overrides: Any) -> Any:
    from bq2pg.service import settings

    return settings.load(configured.configuration(config, env), **overrides)


@app.command()
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    with_worker: Annotated[
        bool, typer.Option("--with-worker", help="Run a worker in this process too.")
    ] = False,
    concurrency: ConcurrencyOpt = 1,
    ssl_certfile: Annotated[
        str | None, typer.Option(help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    ssl_keyfile: Annotated[str | None, typer.Option(help="The certificate's key (PEM).")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
) -> None:
    """Serve the REST API and the dashboard (/ui) on uvicorn; bq2pg.yaml's service: section
    sets the queue's database and the limits."""
    from bq2pg.service import server

    settings = _settings(config, env, host=host, port=port)
    tls = {"ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile} if ssl_certfile else None
    scheme = "https" if tls else "http"
    err.print(f"bq2pg API on {scheme}://{settings.host}:{settings.port} (docs at /docs, "
              f"dashboard at /ui){' with a worker' if with_worker else ''}")  # fmt: skip
    server.serve(settings, configured.configuration(config, env), with_worker=with_worker,
                 concurrency=concurrency, tls=tls)  # fmt: skip


@app.command()
def worker(concurrency: ConcurrencyOpt = 1, config: ConfigOpt = None, env: EnvOpt = None) -> None:
    """Run queued runs (and the schedules of bq2pg.yaml's jobs) until stopped; a run in
    flight stops at a chunk boundary and stays resumable."""
    from bq2pg.service import server

    server.work(_settings(config, env), configured.configuration(config, env), concurrency)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="What the key is for.")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin.")],
    to: Annotated[
        str | None,
        typer.Option("--to", help="The queue's database [default: the service's database]."),
    ] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
) -> None:
    """Create a key and print it once (alone on the last line); only its hash is stored."""
    from bq2pg.service import keys

    url = configured.adhoc_database_url(to) if to else _settings(config, env).database_url
    found, key = keys.create(url, name, role)
    out.print(f"created {found.role} key {found.id} ({found.name}); it is shown once:",
              markup=False, highlight=False)  # fmt: skip
    out.print(key, markup=False, highlight=False, soft_wrap=True)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_…), as listed.")],
    to: Annotated[str | None, typer.Option("--to", help="The queue's database.")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
) -> None:
    """Revoke a key: it stops working at once (within 2 s in a running API)."""
    from bq2pg.service import keys

    url = configured.adhoc_database_url(to) if to else _settings(config, env).database_url
    if not keys.revoke(url, key_id):
        err.print(f"no active key {key_id}")
        raise typer.Exit(2)
    out.print(f"revoked {key_id}", markup=False)


@keys_app.command("list")
def list_keys(
    to: Annotated[str | None, typer.Option("--to", help="The queue's database.")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
) -> None:
    """List the keys (never the keys themselves)."""
    from bq2pg.service import keys

    url = configured.adhoc_database_url(to) if to else _settings(config, env).database_url
    table = Table(title="API keys", title_justify="left")
    for column in ("id", "name", "role", "created", "last used", "revoked"):
        table.add_column(column)
    for k in keys.listing(url):
        table.add_row(k.id, k.name, k.role, f"{k.created_at:%Y-%m-%d %H:%M}",
                      f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "",
                      f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "")  # fmt: skip
    out.print(table)
