"""What ``bq2pg doctor`` asks a PostgreSQL server: who we are there, what we may do, and the
settings that matter for bulk loads.

One read-only session collects :class:`ServerFacts`; judging them is :mod:`bq2pg.doctor`'s
job. Settings come from ``pg_settings`` with their units, so that ``64MB`` and ``1GB`` (or
``5min`` and ``900s``) compare as quantities, not as text (:func:`quantity`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bq2pg.postgres.connection import session
from bq2pg.postgres.space import FreeSpace, free_space

#: pg_settings' units, in the base unit of their kind: bytes for memory, seconds for time
#: (https://www.postgresql.org/docs/current/config-setting.html#CONFIG-SETTING-NAMES-VALUES;
#: memory units are powers of 1024).
UNITS: dict[str, float] = {
    "B": 1,
    "kB": 1024,
    "MB": 1024**2,
    "GB": 1024**3,
    "TB": 1024**4,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1,
    "min": 60,
    "h": 3600,
    "d": 86400,
}
_QUANTITY = re.compile(r"^\s*(?P<number>-?\d+(?:\.\d+)?)?\s*(?P<unit>[A-Za-z]+)?\s*$")


def quantity(text: str, unit: str | None = None) -> float | None:
    """``text`` as a number in base units (bytes, seconds), or None when it is not numeric.

    ``unit`` is pg_settings' unit of a raw setting, which may carry a factor (``8kB``:
    ``quantity("8192", "8kB")`` is 64 MiB); without it, ``text`` may carry its own unit, as
    in ``SET`` (``quantity("1GB")``).
    """
    found = _QUANTITY.match(text)
    if not found or found["number"] is None:
        return None
    value = float(found["number"])
    for part in (unit, found["unit"]):
        if not part:
            continue
        scale = _QUANTITY.match(part)
        if not scale or (scale["unit"] or "") not in UNITS:
            return None
        value *= float(scale["number"] or 1) * UNITS[scale["unit"]]
    return value


@dataclass(frozen=True)
class Setting:
    """One row of ``pg_settings``, as this session sees it (role and URL options included)."""

    name: str
    #: As ``SHOW`` prints it: ``64MB``, ``5min``, ``replica``.
    shown: str
    #: Numeric settings in base units (bytes, seconds; unitless ones as they are); None for
    #: strings, booleans and enums.
    quantity: float | None
    #: Where it can be changed: ``user``/``superuser`` (per role or session), ``sighup``
    #: (reload), ``postmaster`` (restart).
    context: str
    #: The values an enum setting accepts on this server (``lz4`` only when compiled in).
    enumvals: tuple[str, ...]


@dataclass(frozen=True)
class SchemaAccess:
    """Whether a schema exists, and this role's USAGE and CREATE on it."""

    name: str
    #: ``name`` as SQL: quoted where PostgreSQL's ``quote_ident`` says it must be.
    ident: str
    exists: bool
    usage: bool
    create: bool


@dataclass(frozen=True)
class ServerFacts:
    """What a PostgreSQL server says about itself and about the connected role."""

    #: ``database NAME at HOST:PORT`` (never a password).
    where: str
    version: str
    version_num: int
    role: str
    database: str
    #: The role and the database as SQL identifiers, for a GRANT shown to a person.
    role_ident: str
    database_ident: str
    superuser: bool
    #: CREATE on the current database (needed to create a schema).
    create_on_database: bool
    schemas: tuple[SchemaAccess, ...]
    #: The settings asked for that this server has (a newer one is absent on an older server).
    settings: dict[str, Setting]
    free: FreeSpace


def probe(url: str, *, schemas: Sequence[str], settings: Sequence[str]) -> ServerFacts:
    """Connect to ``url`` and collect the facts ``bq2pg doctor`` judges (reads only).

    Raises:
        TargetError: the server cannot be reached or refuses the connection (a bq2pg error,
            translated at the boundary; the message carries no password).
    """
    with session(url, "checking the PostgreSQL server") as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), "
            "current_setting('server_version_num')::int, current_user, current_database(), "
            "quote_ident(current_user), quote_ident(current_database()), "
            "current_setting('is_superuser') = 'on', "
            "has_database_privilege(current_database(), 'CREATE')"
        ).fetchone()
        assert row is not None
        version, version_num, role, database, role_ident, database_ident, superuser, create_db = row
        access = tuple(
            SchemaAccess(name, ident, exists, usage, create)
            for name, ident, exists, usage, create in conn.execute(
                "SELECT s.name, quote_ident(s.name), n.oid IS NOT NULL, "
                "coalesce(has_schema_privilege(n.oid, 'USAGE'), false), "
                "coalesce(has_schema_privilege(n.oid, 'CREATE'), false) "
                "FROM unnest(%s::text[]) WITH ORDINALITY AS s(name, i) "
                "LEFT JOIN pg_namespace n ON n.nspname = s.name ORDER BY s.i",
                [list(schemas)],
            )
        )
        rows = conn.execute(
            "SELECT name, setting, unit, current_setting(name), context, "
            "coalesce(enumvals, '{}') FROM pg_settings WHERE name = ANY(%s)",
            [list(settings)],
        ).fetchall()
        free = free_space(conn)
        info = conn.info
        where = f"database {info.dbname} at {info.host}:{info.port}"
    return ServerFacts(
        where=where,
        version=str(version).split()[0],
        version_num=int(version_num),
        role=str(role),
        database=str(database),
        role_ident=str(role_ident),
        database_ident=str(database_ident),
        superuser=bool(superuser),
        create_on_database=bool(create_db),
        schemas=access,
        settings={
            name: Setting(
                name=name,
                shown=shown,
                quantity=quantity(raw, unit) if unit else quantity(raw),
                context=context,
                enumvals=tuple(enumvals),
            )
            for name, raw, unit, shown, context, enumvals in rows
        },
        free=free,
    )
