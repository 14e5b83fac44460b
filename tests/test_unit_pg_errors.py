"""The PostgreSQL boundary classifies by what the caller should do (pure: psycopg's own error
classes, no server)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pge

from bq2pg.errors import RowRejectedError, TargetError, Transient
from bq2pg.postgres.errors import translate


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg.OperationalError('password authentication failed for user "u"'), False),
        (pge.DiskFull("could not extend file"), True),
        (pge.AdminShutdown("terminating connection"), True),
        (pge.CannotConnectNow("the database system is starting up"), True),
        (pge.SerializationFailure("could not serialize"), True),
        (pge.LockNotAvailable("could not obtain lock"), True),
        (pge.InvalidPassword("password authentication failed"), False),
        (pge.InsufficientPrivilege("permission denied for schema bq2pg"), False),
        (pge.UndefinedTable("relation does not exist"), False),
        (pge.ProgramLimitExceeded("row is too big"), False),
    ],
)
def test_transient_or_terminal(exc, transient):
    error = translate(exc, "doing it")
    assert isinstance(error, TargetError)
    assert isinstance(error, Transient) == transient
    assert error.message.startswith("doing it: ")


def test_a_row_error_is_rejected_row_with_its_sqlstate():
    error = translate(pge.CharacterNotInRepertoire("invalid byte sequence"), "COPY", table="s.t")
    assert isinstance(error, RowRejectedError)
    assert (error.sqlstate, error.table) == ("22021", "s.t")


def test_privilege_errors_say_what_to_grant():
    error = translate(pge.InsufficientPrivilege("permission denied for schema bq2pg"), "reading")
    assert "GRANT USAGE ON SCHEMA bq2pg" in str(error) and error.sqlstate == "42501"


def test_passwords_in_messages_are_redacted():
    exc = psycopg.OperationalError("could not connect to postgresql://u:CANARY-9@h/db")
    assert "CANARY-9" not in str(translate(exc, "connecting"))
