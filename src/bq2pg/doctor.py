"""``bq2pg doctor``: check that a load can run, and advise on what would make it faster.

Each check is one :class:`Check` line, ``ok``, ``warn`` or ``fail``. A ``fail`` is blocking
(a load would fail: the command exits non-zero); a ``warn`` is advice, with the value to set
and why. The checks never raise for what they find: an unreachable server, a missing table or
missing credentials are ``fail`` lines. They never show a password (URLs are redacted) or a
token (credentials are named by kind).

The tuning advice is data (:data:`SETTING_RULES`): one rule per PostgreSQL setting, with its
test, the value to set and the reason, applied by one loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

from bq2pg.bigquery import probe as bq_probe
from bq2pg.bigquery.client import Source, TableRef
from bq2pg.config.secrets import redact
from bq2pg.errors import Bq2pgError
from bq2pg.postgres import settings_probe
from bq2pg.postgres.settings_probe import ServerFacts, Setting, quantity

__all__ = [
    "SETTING_RULES",
    "Check",
    "Rule",
    "blocking",
    "check_bigquery",
    "check_postgres",
    "run_checks",
]

Status = Literal["ok", "warn", "fail"]
#: bq2pg's state schema, which every run needs beside the target schema.
STATE_SCHEMA = "bq2pg"
#: The oldest PostgreSQL bq2pg supports (DESIGN.md, "Real parts").
PG_MIN_VERSION_NUM = 130000
#: Free space wanted beyond the estimate: the index builds' sort files and the WAL of the load
#: need room too, and a replace keeps the old table until it publishes the new one.
DISK_HEADROOM = 1.2


@dataclass(frozen=True)
class Check:
    """One line of ``bq2pg doctor``: what was checked, how it went, and what to do."""

    name: str
    status: Status
    detail: str
    advice: str = ""

    @property
    def blocking(self) -> bool:
        """A ``fail`` blocks a load (the command exits non-zero); a ``warn`` is advice."""
        return self.status == "fail"


def blocking(checks: Sequence[Check]) -> bool:
    """Whether any of ``checks`` blocks a load."""
    return any(c.blocking for c in checks)


@dataclass(frozen=True)
class Rule:
    """Advice on one PostgreSQL setting for bulk loads."""

    setting: str
    #: Whether the server's value is already good.
    test: Callable[[Setting], bool]
    #: The value to set (as in ``SET``: ``1GB``, ``15min``, ``off``).
    recommended: str
    why: str


def at_least(value: str) -> Callable[[Setting], bool]:
    """A rule's test: the setting's quantity is at least ``value`` (units understood)."""
    wanted = quantity(value)
    assert wanted is not None, value
    return lambda s: s.quantity is not None and s.quantity >= wanted


def equals(value: str) -> Callable[[Setting], bool]:
    """A rule's test: the setting is ``value``."""
    return lambda s: s.shown.lower() == value.lower()


#: The performance tuning rules (the original design's rule engine), applied in this order.
SETTING_RULES: tuple[Rule, ...] = (
    Rule("maintenance_work_mem", at_least("1GB"), "1GB",
         "keeps the sorts of the primary-key and index builds after a load in memory"),
    Rule("max_wal_size", at_least("4GB"), "4GB",
         "fewer checkpoints during a load, each of which writes full-page images again"),
    Rule("checkpoint_timeout", at_least("15min"), "15min",
         "spaces checkpoints out over a long load, so fewer full-page images are written"),
    Rule("wal_level", equals("minimal"), "minimal",
         "a replace's primary-key and index builds then write no WAL; only on a server "
         "without replicas or WAL archiving, and it needs max_wal_senders = 0"),
    Rule("synchronous_commit", lambda s: s.shown.lower() != "off", "on",
         "exactly-once loading counts a chunk as loaded when its commit returns; with off, a "
         "server crash can lose chunks the run already counted (local stays safe)"),
    Rule("max_parallel_maintenance_workers", at_least("4"), "4",
         "builds the btree indexes after a load with parallel workers"),
    Rule("default_toast_compression", equals("lz4"), "lz4",
         "lz4 compresses wide text several times faster than pglz, the CPU limit of COPY"),
)  # fmt: skip


def check_postgres(
    database_url: str, *, schema: str | None = None, needed_bytes: int | None = None
) -> list[Check]:
    """Check the target PostgreSQL: reachable, version, privileges, the role, bulk-load
    settings and free disk space (against ``needed_bytes``, the plan's estimate, when given).

    Args:
        database_url: the target database's URL (shown only redacted).
        schema: the target schema; without it only bq2pg's state schema is checked.
        needed_bytes: bytes the load will add (``bq2pg plan``'s estimate).
    """
    schemas = [STATE_SCHEMA] + ([schema] if schema and schema != STATE_SCHEMA else [])
    try:
        facts = settings_probe.probe(
            database_url, schemas=schemas, settings=[r.setting for r in SETTING_RULES]
        )
    except Bq2pgError as exc:
        return [Check("postgres", "fail", _one_line(str(exc)), _UNREACHABLE)]
    version = Check("postgres version", "ok", f"PostgreSQL {facts.version}")
    if facts.version_num < PG_MIN_VERSION_NUM:
        version = Check(version.name, "fail", version.detail, "bq2pg needs PostgreSQL 13 or later")
    return [
        Check("postgres", "ok", f"connected to {_one_line(facts.where)} as {facts.role}"),
        version,
        _privileges(facts),
        *(_setting(rule, facts) for rule in SETTING_RULES),
        _disk(facts, needed_bytes),
    ]


_UNREACHABLE = (
    "check the URL (--to / BQ2PG_DATABASE_URL), that the server runs and accepts connections "
    "from here (pg_hba.conf), and the role's password"
)


def _privileges(facts: ServerFacts) -> Check:
    """CREATE on the database, or USAGE and CREATE on schemas that exist already (a
    superuser has them all, and gets advice to load with a role of its own)."""
    role, names = facts.role_ident, ", ".join(s.name for s in facts.schemas)
    if facts.superuser:
        return Check("privileges", "ok", f"{facts.role} is a superuser", _SUPERUSER)
    missing: list[str] = []
    grants: list[str] = []
    to_create = [s.name for s in facts.schemas if not s.exists]
    if to_create and not facts.create_on_database:
        missing.append(
            f"CREATE on database {facts.database} (to create schema {', '.join(to_create)})"
        )
        grants.append(f"GRANT CREATE ON DATABASE {facts.database_ident} TO {role};")
    for s in facts.schemas:
        lacking = [p for p, has in (("USAGE", s.usage), ("CREATE", s.create)) if not has]
        if s.exists and lacking:
            missing.append(f"{' and '.join(lacking)} on schema {s.name}")
            grants.append(f"GRANT {', '.join(lacking)} ON SCHEMA {s.ident} TO {role};")
    if missing:
        return Check(
            "privileges", "fail", f"role {facts.role} lacks {'; '.join(missing)}",
            "as the database owner or a superuser, run: " + " ".join(grants),
        )  # fmt: skip
    how = "CREATE on the database" if to_create else "USAGE and CREATE on them"
    return Check("privileges", "ok", f"{facts.role} may create tables in {names} ({how})")


_SUPERUSER = (
    "load with a role of its own that has only CREATE on the database (or USAGE and CREATE on "
    "the schemas): a mistake then cannot reach other data"
)


def _setting(rule: Rule, facts: ServerFacts) -> Check:
    """Apply one rule; the advice says how to set the value where the setting can change."""
    found = facts.settings.get(rule.setting)
    if found is None:
        return Check(rule.setting, "ok", f"not a setting of PostgreSQL {facts.version}")
    detail = f"{rule.setting} = {found.shown}"
    if rule.test(found):
        return Check(rule.setting, "ok", detail)
    if found.enumvals and rule.recommended not in found.enumvals:
        return Check(rule.setting, "ok", f"{detail} ({rule.recommended} is not built in)")
    assignment = f"{rule.setting} = '{rule.recommended}'"
    if found.context in ("user", "superuser"):
        how = f"ALTER ROLE {facts.role_ident} SET {assignment};"
    elif found.context == "sighup":
        how = f"ALTER SYSTEM SET {assignment}; SELECT pg_reload_conf();"
    else:
        how = f"ALTER SYSTEM SET {assignment}; then restart the server"
    return Check(rule.setting, "warn", detail, f"set {rule.recommended}: {rule.why}. {how}")


def _disk(facts: ServerFacts, needed_bytes: int | None) -> Check:
    free = facts.free
    if free.bytes is None:
        return Check(
            "disk space", "warn", f"free space {free.how}",
            "check the free space of the server's data directory by hand",
        )  # fmt: skip
    have = f"{_size(free.bytes)} free ({free.how})"
    if needed_bytes is None:
        return Check("disk space", "ok", have)
    if needed_bytes > free.bytes:
        return Check(
            "disk space", "fail", f"{have}; the load needs about {_size(needed_bytes)}",
            "free space on the server, or load fewer rows (--where, --columns)",
        )  # fmt: skip
    if needed_bytes * DISK_HEADROOM > free.bytes:
        return Check(
            "disk space", "warn", f"{have}; the load needs about {_size(needed_bytes)}",
            f"keep {DISK_HEADROOM - 1:.0%} more free for index builds and WAL",
        )  # fmt: skip
    return Check("disk space", "ok", f"{have}; the load needs about {_size(needed_bytes)}")


def _one_line(text: str) -> str:
    """``text`` redacted, on one line (a driver's message may span several)."""
    return " ".join(redact(text).split())


def _size(n: float) -> str:
    """``n`` bytes for a person: ``5.0 GiB``."""
    unit = "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"


def check_bigquery(source: Callable[[], Source] | None, table: str | None) -> list[Check]:
    """Check BigQuery: the clients can be made (credentials found), the billing project, the
    emulator's endpoints when it is one, and a zero-row read session on ``table`` when given.

    Args:
        source: makes the clients; it may raise ConfigError (missing credentials), which
            becomes a ``fail`` line. None: no BigQuery checks.
        table: ``project.dataset.table`` to check read permission on.
    """
    if source is None:
        return []
    try:
        src = source()
    except Bq2pgError as exc:
        return [Check("bigquery client", "fail", _one_line(exc.message), exc.hint or "")]
    except Exception as exc:  # what the Google clients raise while making themselves
        if isinstance(exc, OSError) and "Project was not passed" in str(exc):
            # google.cloud.client's words when neither the caller nor ADC names a project
            return [Check("billing project", "fail", "no billing project given", _NO_PROJECT)]
        return [Check("bigquery client", "fail", _one_line(f"{type(exc).__name__}: {exc}"))]
    checks = [_credentials(src), _billing(src), *_endpoints(src)]
    if table and not blocking(checks):  # a dead endpoint would only time out again
        checks.append(_read_session(src, table))
    return checks


_NO_PROJECT = (
    "give --project or set BQ2PG_PROJECT (or `gcloud config set project ID`): read sessions "
    "are billed to it"
)


def _credentials(src: Source) -> Check:
    if bq_probe.is_local(src):
        kind = "emulator" if src.emulated else "local endpoint"
        return Check("bigquery credentials", "ok", f"not needed ({kind}: anonymous)")
    try:
        found = bq_probe.find_credentials()
    except Bq2pgError as exc:
        return Check("bigquery credentials", "fail", _one_line(exc.message), exc.hint or "")
    return Check("bigquery credentials", "ok", found.kind)


def _billing(src: Source) -> Check:
    if not src.project:
        return Check("billing project", "fail", "no billing project given", _NO_PROJECT)
    return Check("billing project", "ok", f"read sessions are billed to {src.project}")


def _endpoints(src: Source) -> list[Check]:
    """Whether an emulator's (or a local server's) endpoints answer; production's are
    checked by the read session."""
    if not bq_probe.is_local(src):
        return []
    rest, grpc_endpoint = bq_probe.endpoints(src)
    checks = []
    for name, endpoint, call in (
        ("bigquery REST endpoint", rest, partial(bq_probe.rest_health, emulator=src.emulated)),
        ("bigquery Storage Read endpoint", grpc_endpoint, bq_probe.grpc_ready),
    ):
        if not endpoint:
            continue
        try:
            said = call(endpoint)
        except Bq2pgError as exc:
            checks.append(Check(name, "fail", _one_line(exc.message), _DEAD_ENDPOINT))
            continue
        checks.append(Check(name, "ok", f"{endpoint} answers" + (f": {said}" if said else "")))
    return checks


_DEAD_ENDPOINT = "start it (`bq2pg emulator start`) or fix the endpoint's URL"


def _read_session(src: Source, table: str) -> Check:
    try:
        ref = TableRef.parse(table)
        bq_probe.zero_row_session(src, ref)
    except Bq2pgError as exc:
        return Check("read session", "fail", _one_line(exc.message), exc.hint or "")
    return Check("read session", "ok", f"may read {ref} (a zero-row read session opened)")


def run_checks(
    database_url: str | None,
    *,
    source: Callable[[], Source] | None = None,
    table: str | None = None,
    schema: str | None = None,
    needed_bytes: int | None = None,
) -> list[Check]:
    """All of ``bq2pg doctor``: PostgreSQL's checks (when ``database_url`` is given), then
    BigQuery's (when ``source`` is); see :func:`check_postgres` and :func:`check_bigquery`."""
    checks = []
    if database_url:
        checks += check_postgres(database_url, schema=schema, needed_bytes=needed_bytes)
    return checks + check_bigquery(source, table)
