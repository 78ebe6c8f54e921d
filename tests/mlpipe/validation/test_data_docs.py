"""Data Docs: each validated day gets a Great Expectations page in the pipeline's site, that
reads offline, that a re-validation replaces, and that parallel validations all reach."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest

from mlpipe.errors import ValidationFailed
from mlpipe.sources import read_day
from mlpipe.storage import Store
from mlpipe.validation import data_docs, gx_store, validate
from mlpipe.validation.data_docs import DataDocs

# What GX's pages fetch from the network: styling and scripts (Bootstrap, jQuery,
# bootstrap-table, Font Awesome, Vega) and its logo. GX has no option to bundle them.
# Without them a day's page is unstyled but shows all its findings (see _Page.text).
CDN_HOSTS = {"cdn.jsdelivr.net", "cdnjs.cloudflare.com", "code.jquery.com", "maxcdn.bootstrapcdn.com",
             "stackpath.bootstrapcdn.com", "unpkg.com", "great-expectations-web-assets.s3.us-east-2.amazonaws.com"}
IN_SET = "values must belong to this set"  # how GX names expect_column_values_to_be_in_set on a page


class _Page(HTMLParser):
    """What a browser shows of a page when nothing is fetched and no script runs (its text
    outside scripts and styles), and the http(s) URLs the page would fetch."""

    FETCHED = {"script": "src", "link": "href", "img": "src", "iframe": "src", "source": "src", "embed": "src"}

    def __init__(self, path: Path):
        super().__init__()
        self.parts: list[str] = []
        self.fetched: set[str] = set()
        self._hidden = 0
        self.feed(path.read_text())
        self.text = " ".join(" ".join(self.parts).split())

    def handle_starttag(self, tag, attrs):
        self._hidden += tag in ("script", "style")
        url = dict(attrs).get(self.FETCHED.get(tag, ""))
        if url and url.startswith(("http://", "https://", "//")):
            self.fetched.add(url)

    def handle_endtag(self, tag):
        self._hidden -= tag in ("script", "style")

    def handle_data(self, data):
        if not self._hidden:
            self.parts.append(data)


def _check(spec, store, frame, day, bad=False):
    if bad:
        frame = frame.copy()
        frame.loc[0, "channel"] = "fax"  # not one of the spec's categories
    try:
        return validate(frame, spec, f"raw/{day}", lambda p: store.write_report("validation", day, p),
                        DataDocs(store.report_dir("data_docs"), day))
    except ValidationFailed as exc:
        return exc


@pytest.fixture
def check(spec, store, cache_dir):
    """``check(day, bad=False)``: validate the toy day with Data Docs (with one "fax"
    channel, not an allowed category, when ``bad``); the summary or the ValidationFailed."""
    return lambda day, bad=False: _check(spec, store, read_day(spec, day, cache_dir), day, bad)


def _index(store: Store) -> str:
    return (store.report_dir("data_docs") / "index.html").read_text()


def _link(store: Store, page: str) -> str:
    return Path(page).relative_to(store.report_dir("data_docs")).as_posix()


def test_a_failed_day_has_a_local_page_showing_the_failed_rule_and_its_unexpected_value(check, store, days):
    error = check(days[1], bad=True)
    assert isinstance(error, ValidationFailed)
    page = Path(error.data_docs)
    assert page.is_file() and page.suffix == ".html" and page.is_relative_to(store.report_dir("data_docs"))
    assert f"data docs: {page}" in str(error)  # the task log and the alert's message link to it
    assert json.loads(Path(error.report).read_text())["data_docs"] == str(page)
    shown = _Page(page)
    assert "Status: Failed" in shown.text and "Run Name 2024-01-02" in shown.text
    assert f"{IN_SET}: web app store . 1 unexpected values found." in shown.text
    assert "Unexpected Value Count fax 1" in shown.text  # the value GX found, in the page's own HTML
    assert {urlparse(u).hostname for u in shown.fetched} <= CDN_HOSTS  # only styling and scripts
    assert (page.parents[5] / "expectations" / "toy" / "raw.html").is_file()  # the suite its page links to
    assert _link(store, error.data_docs) in _index(store)


def test_a_passing_day_has_a_page_too(check, store, days):
    summary = check(days[2])
    page = Path(summary["data_docs"])
    assert page.is_file() and json.loads(Path(summary["report"]).read_text())["data_docs"] == str(page)
    shown = _Page(page)
    assert "Status: Succeeded" in shown.text and IN_SET in shown.text and "fax" not in shown.text


def test_revalidating_a_day_replaces_its_page_result_and_index_entry(check, store, days):
    failed = check(days[1], bad=True)
    passed = check(days[1])
    assert passed["data_docs"] == failed.data_docs  # the same link, now to the new result
    shown = _Page(Path(passed["data_docs"]))
    assert "Status: Succeeded" in shown.text and "fax" not in shown.text
    assert len(list((store.report_dir("data_docs") / "results").rglob("*.json"))) == 1
    assert _index(store).count(_link(store, passed["data_docs"])) == 1


def test_the_index_lists_the_latest_days_and_every_day_keeps_its_page(check, store, days, monkeypatch):
    monkeypatch.setattr(data_docs, "INDEX_DAYS", 2)
    pages = {day: check(day)["data_docs"] for day in (days[1], days[2], days[3])}
    pages[days[0]] = check(days[0])["data_docs"]  # backfilled after later days
    index = _index(store)
    assert [day for day, page in sorted(pages.items()) if _link(store, page) in index] == [days[2], days[3]]
    assert all(Path(page).is_file() for page in pages.values())


def test_an_update_lists_no_stored_result_so_its_cost_does_not_grow_with_the_history(check, store, days,
                                                                                    monkeypatch):
    """GX's builders list every stored result and page on each build; here they see only the
    newest days' keys (``.recent-results.json``), so day 400 lists as little as day 2. A site
    without that file (written before it existed) is listed once to start it."""
    site = store.report_dir("data_docs")
    check(days[0])
    (site / data_docs.RECENT).unlink()
    listed = []
    real = gx_store._files_under
    monkeypatch.setattr(gx_store, "_files_under", lambda folder: listed.append(str(folder)) or real(folder))
    check(days[1])
    assert str(site / "results") in listed  # the one listing that starts the file
    listed.clear()
    check(days[2])
    assert listed and not [f for f in listed if f.startswith((str(site / "results"), str(site / "validations")))]
    index = _index(store)
    assert all(f"validations/toy/raw/{day}/" in index for day in days[:3])


def _in_a_process(*args) -> tuple[bool, str]:
    outcome = _check(*args)
    failed = isinstance(outcome, ValidationFailed)
    return failed, outcome.data_docs if failed else outcome["data_docs"]


def test_parallel_validations_of_different_days_all_reach_the_site(spec, store, cache_dir, days):
    jobs = [(spec, store, read_day(spec, d, cache_dir), d, d.day % 2 == 0) for d in days[:4]]
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("fork")) as pool:
        outcomes = list(pool.map(_in_a_process, *zip(*jobs, strict=True)))
    assert [failed for failed, _ in outcomes] == [d.day % 2 == 0 for d in days[:4]]
    index = _index(store)
    assert all(Path(page).is_file() and _link(store, page) in index for _, page in outcomes)
    results = sorted((store.report_dir("data_docs") / "results").rglob("*.json"))
    assert [json.loads(r.read_text())["meta"]["run_id"]["run_name"] for r in results] == [str(d) for d in days[:4]]


def test_an_update_waits_for_the_site_lock_another_task_holds(check, store, days, monkeypatch):
    from filelock import FileLock, Timeout

    monkeypatch.setattr(data_docs, "LOCK_TIMEOUT_S", 0.5)
    site = store.report_dir("data_docs")
    site.mkdir(parents=True)
    with FileLock(site / ".lock"):  # an OS lock: another process's holds it alike
        with pytest.raises(Timeout):
            check(days[1])
        assert not (site / "index.html").exists()
    assert Path(check(days[1])["data_docs"]).is_file()


def test_a_page_gx_cannot_render_leaves_the_validation_to_go_on(check, store, days, monkeypatch, caplog):
    from great_expectations.render.renderer import ValidationResultsPageRenderer

    def broken(self, *args, **kwargs):
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(ValidationResultsPageRenderer, "render", broken)
    summary = check(days[2])
    assert summary["data_docs"] is None and json.loads(Path(summary["report"]).read_text())["data_docs"] is None
    assert "no Data Docs page for 2024-01-03" in caplog.text


def test_the_suite_page_is_rendered_again_only_when_the_suite_changes(check, spec, store, cache_dir, days, monkeypatch):
    rendered = []
    real = data_docs._suite_if_changed
    monkeypatch.setattr(data_docs, "_suite_if_changed", lambda *a: rendered.append(real(*a)) or rendered[-1])
    check(days[0])
    check(days[1])
    changed = spec.model_copy(update={"validation": spec.validation.model_copy(update={"max_rows": 123456})})
    _check(changed, store, read_day(spec, days[2], cache_dir), days[2])

    assert [bool(r) for r in rendered] == [True, False, True]
    assert len(list((store.report_dir("data_docs") / "expectations").rglob("*.html"))) == 1


def test_gx_static_files_are_copied_once_per_site(check, store, days, monkeypatch):
    """GX copies its 20 static files (CSS, fonts) on every build; the site keeps them, and
    a stamp per GX version says so, so later updates write only the day's page and the index."""
    from mlpipe.validation import gx_store

    written = []
    real = gx_store.atomic_write
    monkeypatch.setattr(gx_store, "atomic_write", lambda path, data, **kw: written.append(str(path)) or real(path, data, **kw))
    check(days[0])
    first = [p for p in written if "/static/" in p]
    written.clear()
    check(days[1])
    assert len(first) >= 10 and all(Path(p).is_file() for p in first)
    assert [p for p in written if "/static/" in p] == []
    assert any(p.endswith("index.html") for p in written) and any("2024-01-02" in p for p in written)
