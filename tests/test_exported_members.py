"""The public API is what ``bq2pg.__all__`` declares, and the error tree is whole (httpx style)."""

from __future__ import annotations

import inspect
import types

import bq2pg
from bq2pg import errors


def test_all_exports_exactly_the_public_names():
    public = {
        name
        for name, value in vars(bq2pg).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public | {"__version__"} == set(bq2pg.__all__)


def test_every_error_is_public_and_in_the_tree():
    classes = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and value.__module__ == errors.__name__
    }
    assert classes <= set(errors.__all__) <= set(bq2pg.__all__)
    for name in classes - {"Transient"}:
        assert issubclass(getattr(errors, name), errors.Bq2pgError), name
        assert name in errors.__doc__, f"{name} is not drawn in the tree of errors.py"


def test_transient_is_a_marker_independent_of_the_subsystem():
    transient = [errors.TransientSourceError, errors.TransientTargetError,
                 errors.SessionExpiredError, errors.CircuitOpenError]  # fmt: skip
    assert all(issubclass(c, errors.Transient) for c in transient)
    terminal = [errors.SourceError, errors.TargetError, errors.ConfigError,
                errors.RowRejectedError, errors.VerificationError]  # fmt: skip
    assert not any(issubclass(c, errors.Transient) for c in terminal)
    assert errors.TransientTargetError("x").transient and not errors.TargetError("x").transient


def test_errors_carry_fields_and_exit_codes():
    exc = errors.TargetError(
        "copying t: permission denied", table="s.t", sqlstate="42501", hint="grant it"
    )
    assert exc.fields() == {
        "kind": "TargetError",
        "message": "copying t: permission denied",
        "transient": False,
        "exit_code": 4,
        "table": "s.t",
        "sqlstate": "42501",
        "hint": "grant it",
    }
    assert str(exc) == "copying t: permission denied; grant it"
    codes = {c.__name__: c.exit_code for c in (errors.ConfigError, errors.SourceError,
             errors.TargetError, errors.EmbeddedError, errors.ConcurrentRunError,
             errors.VerificationError, errors.BudgetExceededError,
             errors.SecretError, errors.QualityGateError, errors.CancelledError)}  # fmt: skip
    assert codes == {"ConfigError": 2, "SourceError": 3, "TargetError": 4, "EmbeddedError": 5,
                     "ConcurrentRunError": 6, "VerificationError": 7, "BudgetExceededError": 9,
                     "SecretError": 10, "QualityGateError": 11, "CancelledError": 12}  # fmt: skip
    assert errors.EXIT_DEAD_LETTERS == 8
