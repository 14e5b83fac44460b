"""bq2pg export features: every feature of the 20 real publications, computed independently."""

from __future__ import annotations

import csv
import datetime as dt
import json

import pyarrow.parquet as pq
import pytest

from bq2pg.bigquery.client import TableRef
from bq2pg.bigquery.seed import create_table
from bq2pg.errors import ConfigError, FilterError
from bq2pg.patents import features
from bq2pg.patents import source as publications
from bq2pg.patents.pipeline import PatentsRequest, run
from conftest import bq2pg_cmd, patents_file


def date(value: int) -> dt.date | None:
    try:
        return dt.datetime.strptime(str(value), "%Y%m%d").date()
    except ValueError:
        return None


def pick(entries: list[dict]) -> str | None:
    english = [e for e in entries if e["language"] == "en" and e["text"]]
    other = [e for e in entries if e["text"]]
    return (english or other or [{"text": None}])[0]["text"]


def expected(rows: list[dict]) -> dict[str, dict[str, object]]:
    cited: dict[str, int] = {}
    for r in rows:
        for c in r["citation"]:
            if c["publication_number"]:
                cited[c["publication_number"]] = cited.get(c["publication_number"], 0) + 1
    out = {}
    for r in rows:
        pub, filing, grant, priority = (
            date(r[k]) for k in ("publication_date", "filing_date", "grant_date", "priority_date")
        )
        cpc = list(dict.fromkeys(c["code"] for c in r["cpc"]))
        title, abstract = pick(r["title_localized"]), pick(r["abstract_localized"])
        row = {
            "country_code": r["country_code"],
            "kind_code": r["kind_code"],
            "publication_year": pub.year if pub else None,
            "priority_year": priority.year if priority else None,
            "granted": grant is not None,
            "inventor_count": len(r["inventor"]),
            "assignee_count": len(r["assignee"]),
            "cpc_count": len(cpc),
            "ipc_count": len(dict.fromkeys(c["code"] for c in r["ipc"])),
            "citation_count": len(r["citation"]),
            "patent_citation_count": sum(1 for c in r["citation"] if c["publication_number"]),
            "npl_citation_count": sum(1 for c in r["citation"] if c["npl_text"]),
            "forward_citation_count": cited.get(r["publication_number"], 0),
            "claims_count": None,
            "title_length": len(title) if title else None,
            "abstract_length": len(abstract) if abstract else None,
            "filing_to_publication_days": (pub - filing).days if pub and filing else None,
            "filing_to_grant_days": (grant - filing).days if grant and filing else None,
        }
        for section in features.CPC_SECTIONS:
            row[f"cpc_section_{section.lower()}"] = any(code.startswith(section) for code in cpc)
        out[r["publication_number"]] = row
    return out


@pytest.fixture(scope="module")
def real_model(source, pg_url, tmp_path_factory):
    """The 20 real rows (both schemas) merged into one model; the rows."""
    rows = [
        json.loads(line)
        for line in patents_file("publications_sample.jsonl").read_text().splitlines()
    ]
    schema = f"features_{tmp_path_factory.mktemp('f').name[-6:]}"
    dataset = f"bq2pg-test.{schema}"
    for name, fields, part in (
        ("p37", publications.PUBLICATIONS, rows[:15]),
        ("p30", publications.PUBLICATIONS_30, rows[15:]),
    ):
        create_table(source, TableRef.parse(f"{dataset}.{name}"), fields)
        assert not source.bq.insert_rows_json(f"{dataset}.{name}", part, retry=None)
        run(source, PatentsRequest(database_url=pg_url, source=f"{dataset}.{name}", schema=schema))
    return schema, rows


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_features_of_the_real_rows_match_the_source(pg_url, real_model, tmp_path, suffix):
    schema, rows = real_model
    path = tmp_path / f"features{suffix}"
    assert features.export(pg_url, path, schema=schema) == 20
    if suffix == ".parquet":
        got = {r.pop("publication_number"): r for r in pq.read_table(path).to_pylist()}
    else:
        with open(path, newline="") as fh:
            got = {r.pop("publication_number"): r for r in csv.DictReader(fh)}
    want = expected(rows)
    assert set(got) == set(want)
    for number, row in want.items():
        if suffix == ".csv":  # CSV is text: booleans t/f, NULL empty
            row = {k: ("" if v is None else {True: "t", False: "f"}.get(v, v) if isinstance(v, bool) else str(v)) for k, v in row.items()}  # fmt: skip
        assert got[number] == row, number


def test_features_have_cross_checkable_values(real_model):
    _, rows = real_model
    want = expected(rows)
    assert want["JP-H0476664-B2"]["title_length"] is None  # no title at all
    assert want["US-2001032386-A1"]["cpc_count"] == 17  # 32 entries, 17 distinct


def test_a_where_filter_selects_publications(pg_url, real_model, tmp_path):
    schema, _ = real_model
    path = tmp_path / "us.parquet"
    assert features.export(pg_url, path, schema=schema, where="country_code = 'US'") == 6
    assert set(pq.read_table(path).column("country_code").to_pylist()) == {"US"}


@pytest.mark.parametrize(
    ("where", "error"),
    [
        ("country_code = 'US'; DROP TABLE publications", FilterError),
        ("pg_sleep(5) IS NULL", FilterError),
        ("nosuch = 1", FilterError),
        ("publication_number IN (SELECT 'x')", FilterError),
    ],
)
def test_bad_export_filters_are_refused(pg_url, real_model, tmp_path, where, error):
    schema, _ = real_model
    with pytest.raises(error):
        features.export(pg_url, tmp_path / "x.csv", schema=schema, where=where)


def test_the_output_must_be_parquet_or_csv(pg_url, tmp_path):
    with pytest.raises(ConfigError, match=r"parquet or \.csv"):
        features.export(pg_url, tmp_path / "x.json")


def test_an_export_shows_in_the_lineage_downstream_of_the_model(pg_url, real_model, tmp_path):
    schema, _ = real_model
    path = tmp_path / "lineage.parquet"
    done = bq2pg_cmd("export", "features", "--to", str(path), "--database", pg_url, "--schema",
                     schema)  # fmt: skip
    assert done.returncode == 0, done.stderr
    down = bq2pg_cmd("lineage", f"{schema}.publications", "--downstream", "--to", pg_url,
                     "--format", "json")  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert str(path.resolve()) in down.stdout
    up = bq2pg_cmd("lineage", str(path.resolve()), "--upstream", "--to", pg_url)
    assert up.returncode == 0, up.stderr
    # the file, back to the BigQuery table of the model's latest run (p30 was loaded last)
    assert f"bigquery:bq2pg-test.{schema}.p30 -> " in up.stdout
