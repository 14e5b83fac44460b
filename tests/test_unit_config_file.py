"""The layers of bq2pg.yaml (pure): each one beats the one below it, as the origins show."""

from __future__ import annotations

import textwrap

import pytest

from bq2pg.config import jobs as config_jobs
from bq2pg.errors import ConfigFileError

FILE = textwrap.dedent("""\
    defaults:
      streams: 1
      limit: 1
      lag: 1h
      where: "a = 1"
      columns: a
      key: id
    jobs:
      items:
        kind: copy
        source: p.d.items
        limit: 2
        lag: 2h
        where: "a = 2"
        columns: [a, b]
        key: id
    environments:
      production:
        defaults:
          lag: 3h
          where: "a = 3"
          columns: c
          key: id2
        jobs:
          items:
            where: "a = 4"
            columns: d
            key: id3
    """)


def line(text: str) -> int:
    """The line of FILE that is ``text`` (stripped)."""
    return next(n for n, found in enumerate(FILE.splitlines(), 1) if found.strip() == text)


WHERE_4 = line('where: "a = 4"')


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "bq2pg.yaml"
    p.write_text(FILE)
    return p


def test_each_layer_beats_the_one_below(path):
    environ = {"BQ2PG_DEFAULTS__COLUMNS": "e", "BQ2PG_JOBS__ITEMS__KEY": "id4",
               "BQ2PG_STREAMS": "5"}  # fmt: skip
    cfg = config_jobs.load(path, "production", environ=environ)
    job = cfg.job("items", {"key": "id5"})
    got = {k: (job.values[k], str(job.origins[k])) for k in
           ("mode", "streams", "limit", "lag", "where", "columns", "key")}  # fmt: skip
    assert got == {
        "mode": ("replace", "built-in"),                     # built-in
        "streams": (5, "BQ2PG_STREAMS"),                     # a flat variable beats the file
        "limit": (2, f"{path}:{line('limit: 2')}"),                          # the job beats the file's defaults
        "lag": ("3h", f"{path}:{line('lag: 3h')}"),                         # the environment's defaults beat the job
        "where": ("a = 4", f"{path}:{WHERE_4}"),                    # the environment's job beats its defaults
        "columns": ("e", "BQ2PG_DEFAULTS__COLUMNS"),         # a variable beats the file
        "key": ("id5", "--key"),                             # a flag beats a variable
    }  # fmt: skip
    assert config_jobs.load(path, environ={}).job("items").values["where"] == "a = 2"
    assert config_jobs.load(path, environ={}).job("items").values["columns"] == "a,b"


def test_a_job_of_the_other_kind_ignores_defaults_it_has_no_key_for(tmp_path):
    p = tmp_path / "bq2pg.yaml"
    p.write_text("defaults:\n  year: 2020\n  streams: 3\njobs:\n  c:\n    kind: copy\n"
                 "    source: p.d.t\n  p:\n    kind: patents\n")  # fmt: skip
    cfg = config_jobs.load(p, environ={})
    assert "year" not in cfg.job("c").values and cfg.job("c").values["streams"] == 3
    assert cfg.job("p").values["year"] == 2020


def test_variables_name_unknown_sections_and_keys(tmp_path):
    with pytest.raises(ConfigFileError, match="BQ2PG_JBOS__X__Y: 'jbos' is not a section"):
        config_jobs.load(None, environ={"BQ2PG_JBOS__X__Y": "1"})
    with pytest.raises(ConfigFileError, match="did you mean 'streams'"):
        config_jobs.load(None, environ={"BQ2PG_DEFAULTS__STREEMS": "1"})


def test_no_file_and_no_environment_is_fine_and_a_named_environment_is_not():
    cfg = config_jobs.load(None, environ={})
    assert cfg.path is None and cfg.names("jobs") == []
    with pytest.raises(ConfigFileError, match="no environment 'production'"):
        config_jobs.load(None, "production", environ={})


def test_literal_passwords_are_redacted_and_references_shown(tmp_path):
    p = tmp_path / "bq2pg.yaml"
    p.write_text("targets:\n  a:\n    url: postgresql://u:CANARY1@h/db\n    password: CANARY2\n"
                 "  b:\n    url: postgresql://h/db\n    password: ${env:PW}\n")  # fmt: skip
    shown = "\n".join(" ".join(r) for r in config_jobs.load(p, environ={}).show())
    assert "CANARY" not in shown and "${env:PW}" in shown
