"""The web dashboard (``/ui``) against the real service on a real port.

Without a browser: pages need a session (else the login page), the login form and every other
form need their CSRF token, the session cookie is HttpOnly and SameSite=Strict, a wrong key is
refused without being echoed, a viewer cannot start a run, static files are a fixed list.

In a real browser (Debian's chromium, chromedriver and Selenium): log in with an operator key,
start a job with "Run now", watch its progress bar reach 100 % (Server-Sent Events), read the
run's page (throughput chart, chunks, phases, dead letters), replay the dead letters while
their cause stands (the page says they still fail) and after it is fixed (they load). The
screenshots of the README are saved on the way (docs/img/dashboard-*.png).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from tests import service_helpers as sh
from tests.conftest import make_table

from bq2pg import CopyRequest, copy_table
from bq2pg.plan.tables import Field
from bq2pg.service import charts

FIELDS = [Field("id", "INT64"), Field("name", "STRING")]
#: Enough rows that a run takes several chunks (with small COPY chunks) and its bar moves.
ROWS = 3000
#: Rows the target's CHECK constraint refuses: they become dead letters.
BAD = {17, 2024}
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SHOTS = sh.ROOT / "docs" / "img"
WAIT_S = 120


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


def _login(web: httpx.Client, api_key: str) -> httpx.Response:
    page = web.get("/ui/login")
    assert page.status_code == 200, page.text
    return web.post("/ui/login", data={"api_key": api_key, "csrf": _csrf(page.text)})


def test_throughput_chart_is_rows_over_time_per_stream() -> None:
    def chunk(stream: str, rows: dict[str, int], dead: int, second: int) -> dict[str, Any]:
        return {"stream": stream, "rows": rows, "dead_letters": dead,
                "committed_at": f"2024-01-01T00:00:0{second}+00:00"}  # fmt: skip

    chunks = [chunk("s/a", {"items": 100}, 0, 1), chunk("s/b", {"items": 50, "items__parts": 7}, 1, 2),
              chunk("s/a", {"items": 100}, 0, 4)]  # fmt: skip
    chart = charts.chart(chunks, "public.items", "2024-01-01T00:00:00+00:00")
    assert chart is not None and (chart["seconds"], chart["rows"]) == (4.0, 200)
    a, b = chart["series"]
    assert (a["stream"], a["rows"], a["rate"]) == ("a", 200, 50.0)
    assert a["points"] == "0.0,180.0 150.0,90.0 600.0,0.0"  # (seconds, rows) scaled to 600×180
    assert (b["rows"], b["points"]) == (51, "0.0,180.0 300.0,134.1")  # its dead letter counts
    assert charts.chart([], "public.items", None) is None


def test_phase_timeline_runs_from_queued_to_the_final_status() -> None:
    def at(second: int) -> dt.datetime:
        return dt.datetime(2024, 1, 1, 0, 0, second, tzinfo=dt.UTC)

    events = [{"event": "status", "data": {"status": "queued"}, "at": at(0)},
              {"event": "status", "data": {"status": "running"}, "at": at(1)},
              {"event": "log", "data": {"event": "run.started"}, "at": at(2)},
              {"event": "phase", "data": {"phase": "publishing"}, "at": at(3)},
              {"event": "status", "data": {"status": "succeeded"}, "at": at(4)}]  # fmt: skip
    found = charts.timeline(events, {"status": "succeeded", "finished_at": at(4).isoformat()})
    assert [(t["label"], t["offset"], t["duration"]) for t in found] == [
        ("queued", 0, 1), ("running", 1, 2), ("publishing", 3, 1), ("succeeded", 4, 0)]  # fmt: skip
    assert (found[1]["x"], found[1]["w"]) == (25.0, 50.0)  # percent of the run's length


@pytest.fixture
def items(source, dataset) -> str:
    rows = [{"id": i, "name": "bad" if i in BAD else f"name {i}"} for i in range(ROWS)]
    return make_table(source, dataset, "items", FIELDS, rows)


def test_dashboard_needs_a_session_and_csrf_tokens(pg_url, emu, items, tmp_path) -> None:
    db = sh.fresh_database(pg_url)
    config = sh.write_config(tmp_path / "bq2pg.yaml", db, emu,
                             {"items": {"kind": "copy", "source": items, "table": "public.items"}})  # fmt: skip
    api = sh.Api(config, tmp_path / "api.log")  # no worker: runs stay queued
    operator, viewer = sh.key(db, "operator"), sh.key(db, "viewer")
    try:
        with httpx.Client(base_url=api.url, timeout=30) as web:
            for path in ("/ui", "/ui/runs", "/ui/jobs", "/ui/dead-letters", "/ui/schedules"):
                answer = web.get(path)
                assert (answer.status_code, answer.headers.get("location")) == (303, "/ui/login")
            assert web.get("/ui/runs/table", headers={"HX-Request": "true"}).headers[
                "HX-Redirect"] == "/ui/login"  # fmt: skip

            page = web.get("/ui/login")
            assert page.status_code == 200
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert '<script src="/ui/static/htmx.min.js' in page.text
            refused = web.post("/ui/login", data={"api_key": operator})  # no CSRF token
            assert refused.status_code == 403
            assert "bq2pg_session" not in refused.headers.get("set-cookie", "")

            wrong = "bq2pg_" + "Wr0ngKey" * 5
            failed = web.post("/ui/login", data={"api_key": wrong, "csrf": _csrf(refused.text)})
            assert failed.status_code == 401
            assert "not valid" in failed.text and "Wr0ngKey" not in failed.text
            assert "bq2pg_session" not in failed.headers.get("set-cookie", "")

            done = _login(web, operator)
            assert done.status_code == 303, done.text[-1500:]
            assert done.headers["location"] == "/ui/runs"
            cookie = next(c for c in done.headers.get_list("set-cookie")
                          if c.startswith("bq2pg_session="))  # fmt: skip
            attributes = [a.strip().lower() for a in cookie.split(";")]
            assert {"httponly", "samesite=strict", "path=/"} <= set(attributes), cookie
            assert "secure" not in attributes  # plain HTTP here; over TLS it is Secure
            assert operator not in cookie  # the cookie names the key, never holds it

            jobs = web.get("/ui/jobs")
            assert jobs.status_code == 200 and "Run now" in jobs.text
            token = _csrf(jobs.text)
            assert web.post("/ui/jobs/items/run", data={"go": "1"}).status_code == 403
            assert web.post("/ui/jobs/items/run", data={"csrf": "0" * 64}).status_code == 403
            # the JSON API takes the cookie too, but a change needs the X-CSRF-Token header
            assert web.post("/api/v1/runs", json={"job": "items"}).status_code == 403
            assert web.get("/api/v1/runs").json()["runs"] == []

            started = web.post("/ui/jobs/items/run", data={"csrf": token})
            assert started.status_code == 303
            location = started.headers["location"]
            assert re.fullmatch(r"/ui/runs/[0-9a-f-]{36}", location), location
            run = web.get(location)
            assert run.status_code == 200
            assert 'class="flash ok"' in run.text and "items queued" in run.text
            assert 'data-field="status">queued<' in run.text
            assert web.get(location).text.count("items queued") == 0  # a flash shows once

            hostile = web.get("/ui/runs", params={"job": "<script>alert(1)</script>"})
            assert hostile.status_code == 200 and "<script>alert(1)" not in hostile.text
            assert web.get("/ui/runs/00000000-0000-0000-0000-000000000000").status_code == 404

            script = web.get("/ui/static/htmx.min.js")
            assert script.status_code == 200 and "htmx" in script.text[:200]
            assert script.headers["content-type"].startswith("text/javascript")
            assert "max-age=" in script.headers["cache-control"]
            assert web.get("/ui/static/app.css").headers["content-type"].startswith("text/css")
            for name in ("ui.py", "..%2Fui.py", "..%2F__init__.py", "templates"):
                assert web.get(f"/ui/static/{name}").status_code == 404

            out = web.post("/ui/logout", data={"csrf": token})
            assert (out.status_code, out.headers["location"]) == (303, "/ui/login")
            assert web.get("/ui/runs").status_code == 303

        with httpx.Client(base_url=api.url, timeout=30) as web:
            assert _login(web, viewer).status_code == 303
            jobs = web.get("/ui/jobs")
            assert jobs.status_code == 200 and "Run now" not in jobs.text
            refused = web.post("/ui/jobs/items/run", data={"csrf": _csrf(jobs.text)})
            assert refused.status_code == 403 and "operator" in refused.text
    finally:
        api.stop()
        print(api.output()[-3000:])


# -- in a real browser ------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists() or shutil.which("chromium") is None:
        pytest.skip("needs Debian's chromium and chromium-driver (/usr/bin/chromium, "
                    "/usr/bin/chromedriver): apt-get install chromium chromium-driver")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(flag)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: Any, name: str, full: bool = False) -> None:
    """A screenshot for the README; ``full``: the whole page, not only the window."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    if full:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(int(height) + 140, 3000))
    driver.save_screenshot(str(SHOTS / name))
    if full:
        driver.set_window_size(size["width"], size["height"])


@pytest.mark.slow
def test_dashboard_in_a_browser_runs_a_job_and_replays_dead_letters(
    pg_url, emu, source, items, tmp_path, browser
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    db = sh.fresh_database(pg_url)
    # the target exists, with a CHECK constraint that refuses the BAD rows (dead letters)
    copy_table(source, CopyRequest(source=items, database_url=db, table="public.items",
                                   mode="append", limit=0))  # fmt: skip
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ALTER TABLE public.items ADD CONSTRAINT no_bad CHECK (name <> 'bad')")
    job = {"kind": "copy", "source": items, "table": "public.items", "mode": "append"}
    config = sh.write_config(tmp_path / "bq2pg.yaml", db, emu, {"items": job})
    api = sh.Api(config, tmp_path / "api.log", with_worker=True,
                 env={"BQ2PG_COPY_CHUNK_BYTES": "8192"})  # fmt: skip
    driver = browser
    wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,))  # fmt: skip

    def text(css: str) -> str:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else ""

    try:
        driver.get(api.url + "/ui/login")
        driver.find_element(By.ID, "api_key").send_keys(sh.key(db, "operator"))
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait.until(lambda d: d.current_url.endswith("/ui/runs"))
        assert "No runs yet" in text("#runs")

        driver.get(api.url + "/ui/jobs")
        driver.find_element(By.CSS_SELECTOR, "button.run-now").click()
        wait.until(lambda d: re.search(r"/ui/runs/[0-9a-f-]{36}$", d.current_url))
        run_url = driver.current_url
        assert "items queued" in text("#flash")
        wait.until(lambda d: text("#live [data-field=percent]") == "100 %")
        # the run ends: the page reloads once, with what the run left behind
        wait.until(lambda d: text("#live [data-field=status]") == "succeeded"
                   and d.find_elements(By.CSS_SELECTOR, "#quality"))  # fmt: skip
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#live[data-live]"))
        assert driver.find_element(By.CSS_SELECTOR, "#live progress").get_attribute("value") in (
            "100", "100.0")  # fmt: skip
        assert len(driver.find_elements(By.CSS_SELECTOR, "#chunks tbody tr")) >= 2
        assert driver.find_elements(By.CSS_SELECTOR, "#throughput svg.chart polyline")
        phases = text("#phases")
        assert "running" in phases and "succeeded" in phases, phases
        assert "2 row(s) PostgreSQL refused" in text("#run-dead-letters")
        assert "public.items" in text("#lineage")
        _shot(driver, "dashboard-run.png", full=True)

        driver.get(api.url + "/ui/runs")
        wait.until(lambda d: text("#runs tbody tr [data-field=percent]") == "100 %")
        assert "succeeded" in text("#runs tbody tr")
        _shot(driver, "dashboard-runs.png")

        driver.get(api.url + "/ui/dead-letters")
        assert len(driver.find_elements(By.CSS_SELECTOR, ".letters tbody tr")) == len(BAD)
        driver.find_element(By.CSS_SELECTOR, "button.replay-all").click()
        wait.until(lambda d: "still failing" in text("#flash"))
        outcome = text("#flash")
        assert "0 row(s) loaded, 2 still failing" in outcome and "no_bad" in outcome, outcome
        assert len(driver.find_elements(By.CSS_SELECTOR, ".letters tbody tr")) == len(BAD)
        _shot(driver, "dashboard-dead-letters.png")

        with psycopg.connect(db, autocommit=True) as conn:  # the cause is fixed
            conn.execute("ALTER TABLE public.items DROP CONSTRAINT no_bad")
        driver.find_element(By.CSS_SELECTOR, "button.replay").click()
        wait.until(lambda d: "1 row(s) loaded" in text("#flash"))
        assert len(driver.find_elements(By.CSS_SELECTOR, ".letters tbody tr")) == 1
        driver.find_element(By.CSS_SELECTOR, "button.replay-all").click()
        wait.until(lambda d: "No dead letters" in text("main"))
        assert "1 row(s) loaded" in text("#flash") and "still failing" not in text("#flash")
        with psycopg.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM public.items").fetchone() == (ROWS,)

        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # a phone
                               {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})  # fmt: skip
        driver.get(run_url)
        wait.until(lambda d: text("#live [data-field=percent]") == "100 %")
        width = driver.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert width[0] <= width[1] + 1, f"the page scrolls sideways on a phone: {width}"
        _shot(driver, "dashboard-phone.png")

        problems = [e["message"] for e in driver.get_log("browser")
                    if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]  # fmt: skip
        assert not problems, problems
    finally:
        api.stop()
        print(api.output()[-3000:])
