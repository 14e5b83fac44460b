"""How OpenLineage names bq2pg's datasets and jobs (its naming conventions).

* a BigQuery table: namespace ``bigquery``, name ``project.dataset.table``;
* a PostgreSQL table: namespace ``postgres://host:port``, name ``database.schema.table``;
* a local file: namespace ``file``, name its absolute path;
* a job: namespace ``bq2pg``, name the configured job's (or :func:`job_name`).

A database URL's user and password never become part of a name.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

#: Where bq2pg lives; with ``/tree/VERSION`` it is the events' ``producer``.
PRODUCER = "https://github.com/bq2pg/bq2pg"
JOB_NAMESPACE = "bq2pg"
BIGQUERY_NAMESPACE = "bigquery"
#: OpenLineage's namespace of local files (their name is the absolute path).
FILE_NAMESPACE = "file"
#: libpq's default port, used when a database URL names none.
POSTGRES_DEFAULT_PORT = 5432


def job_name(kind: str, source: str, target: str) -> str:
    """The name of an unnamed job: stable for the same source and target."""
    return f"{kind}:{source}->{target}"


#: ``key=value`` pairs of a libpq connection string (values may be single-quoted).
_KEY_VALUE = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def _conninfo(database_url: str) -> dict[str, str]:
    """host, port, dbname and user of a PostgreSQL URL or ``key=value`` connection string.

    Parsed here rather than by psycopg (which this layer does not import); a password is
    never kept.
    """
    text = database_url.strip()
    if "://" not in text:
        found = {k: v for k, v in _KEY_VALUE.findall(text)}
        return {
            k: (v[1:-1].replace("\\'", "'").replace("\\\\", "\\") if v.startswith("'") else v)
            for k, v in found.items()
            if k in ("host", "hostaddr", "port", "dbname", "user")
        }
    parts = urlsplit(text)
    info: dict[str, str] = {}
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if userinfo:
        info["user"] = unquote(userinfo.partition(":")[0])
    first = hosts.split(",")[0]
    if first.startswith("["):  # IPv6 literal
        host, _, rest = first[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = first.partition(":")
    if host:
        info["host"] = unquote(host)
    if port:
        info["port"] = port
    if parts.path.strip("/"):
        info["dbname"] = unquote(parts.path.lstrip("/"))
    for key, values in parse_qs(parts.query).items():
        if key in ("host", "hostaddr", "port", "dbname", "user") and values:
            info.setdefault(key, values[0])
    return info


def namespace(database_url: str) -> str:
    """The OpenLineage namespace of a PostgreSQL database: ``postgres://host:port``.

    Never includes the user or the password. A socket directory (or no host) is ``localhost``.
    """
    info = _conninfo(database_url)
    host = (info.get("host") or info.get("hostaddr") or "").split(",")[0].lower()
    if not host or host.startswith("/"):
        host = "localhost"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = (info.get("port") or "").split(",")[0] or str(POSTGRES_DEFAULT_PORT)
    return f"postgres://{host}:{port}"


def database(database_url: str) -> str:
    """The database name of a PostgreSQL URL (libpq's default: the user's name)."""
    info = _conninfo(database_url)
    return info.get("dbname") or info.get("user") or "postgres"
