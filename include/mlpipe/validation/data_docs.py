"""Great Expectations Data Docs: one static site per pipeline, one page per validated day.

GX renders everything (``SiteBuilder``); this module only configures it. The site lives in
``<data root>/<pipeline>/reports/data_docs/``: ``index.html``, a page per day under
``validations/``, the suite's page under ``expectations/``, and ``results/``, the GX
validation results the index is built from.
A day's result key is the day itself (run name and run time), so re-validating a day
replaces its result and its page (same path) instead of adding one. Each update renders
only that day's page, the suite's when it changed (``resource_identifiers``) and the index, which lists
the latest :data:`INDEX_DAYS` days. GX's builders list every stored result on each build
(O(days) per update, O(days²) per backfill), so they are shown only the keys in
``.recent-results.json`` (the newest days, kept under the lock) and the day's own: an update reads
and renders a bounded set, whatever the history. Every day keeps its page; the pipeline's
report index (:mod:`mlpipe.report_index`) links them all.
Updates hold the pipeline's ``data-docs`` lock (:mod:`mlpipe.locks`): parallel ingest tasks,
on any host, share the site. Every file goes through :mod:`mlpipe.storage`
(``gx_store.LocationStoreBackend``), so the site may live on object storage too; a page's
address is then its URL there (serve the bucket, or copy the folder, to browse it).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import urllib.parse
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from mlpipe.storage import Location, atomic_write, is_remote, read_bytes

log = logging.getLogger(__name__)
SITE = "local_site"
INDEX_DAYS = 7  # the index reads each listed day's result (~20 ms for flights'); the report index links every page
RECENT = ".recent-results.json"  # the keys of the newest INDEX_DAYS results: what GX's builders are shown
LOCK_TIMEOUT_S = 600
BATCH = "raw"  # the layer validated; the last part of a page's path


@dataclass(frozen=True)
class DataDocs:
    """Where a validation's page goes: the site folder, the partition day it is for, and
    the lock its updates hold (None: a lock file in a local site)."""

    site: Location
    day: dt.date
    lock: Callable[[], AbstractContextManager] | None = None

    @classmethod
    def of(cls, store, day: dt.date) -> DataDocs:
        """The pipeline's site in ``store``, under the pipeline's ``data-docs`` lock."""
        return cls(store.report_dir("data_docs"), day, lambda: store.lock("data-docs", LOCK_TIMEOUT_S))

    def locked(self) -> AbstractContextManager:
        if self.lock is not None:
            return self.lock()
        from filelock import FileLock

        self.site.mkdir(parents=True, exist_ok=True)
        return FileLock(self.site / ".lock", timeout=LOCK_TIMEOUT_S)


def publish(result: Any, docs: DataDocs) -> str | None:
    """Store ``result`` (a GX suite validation result) as ``docs.day``'s and render its
    page, the suite's and the index; returns the page's path. GX logs a rendering error
    instead of raising it: then there is no page, None, and the validation goes on."""
    from great_expectations import ExpectationSuite
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    day = docs.day
    run_id = RunIdentifier(run_name=day.isoformat(), run_time=dt.datetime(day.year, day.month, day.day,
                                                                          tzinfo=dt.timezone.utc))
    key = ValidationResultIdentifier(ExpectationSuiteIdentifier(result.suite_name), run_id, BATCH)
    result.meta["run_id"] = run_id  # the page's header shows the day, not "__none__"
    suite = ExpectationSuite(result.suite_name, [r.expectation_config for r in result.results])
    with docs.locked():
        import great_expectations as gx

        stamp = docs.site / "static" / f".mlpipe-gx-{gx.__version__}"  # GX's static files, this version's, are there
        static_ready = stamp.exists()
        recent = _recent(docs.site, key.to_tuple())
        context = _context(docs.site, static_ready, recent)
        context.suites.add(suite)  # the day's page links to the suite's
        context.validation_results_store.set(key, result)
        context.build_data_docs(site_names=[SITE], resource_identifiers=[key, *_suite_if_changed(docs.site, suite, key)])
        url = context.get_docs_sites_urls(resource_identifier=key, site_name=SITE)[0]["site_url"]
        atomic_write(docs.site / RECENT, json.dumps(recent[:INDEX_DAYS]))
        if not static_ready:
            atomic_write(stamp, "")
    if url is None:
        log.warning("no Data Docs page for %s: Great Expectations could not render it (its error is logged)", day)
        return None
    if is_remote(docs.site):
        return url
    return urllib.request.url2pathname(urllib.parse.urlparse(url).path)


def _recent(site: Location, key: tuple) -> list[list[str]]:
    """The newest :data:`INDEX_DAYS` result keys with ``key`` among them, newest first
    (sorted by run time, as GX's index is): from ``.recent-results.json``, or, in a site
    written before it existed, from one listing of the results."""
    try:
        keys = json.loads(read_bytes(site / RECENT))
    except FileNotFoundError:
        from mlpipe.validation.gx_store import LocationStoreBackend

        keys = LocationStoreBackend(str(site / "results"), filepath_suffix=".json").list_keys()
    keys = {tuple(k) for k in keys} | {key}
    newest = sorted(keys, key=lambda k: k[-2], reverse=True)[:INDEX_DAYS]  # k[-2]: the run time
    return [list(k) for k in newest if k != key] + [list(key)]  # an older day's own key stays listed: its page


def _suite_if_changed(site: Location, suite: Any, key: Any) -> list:
    """The suite's identifier when its page must be rendered (new or changed suite), else
    nothing: the suite is the same every day, and its page costs a quarter of an update."""
    import hashlib

    # the rules as configured: without GX's per-run ids and the batch each result came from
    rules = [{**e, "id": None, "kwargs": {k: v for k, v in e.get("kwargs", {}).items() if k != "batch_id"}}
             for e in suite.to_json_dict()["expectations"]]
    digest = hashlib.sha256(json.dumps(rules, sort_keys=True, default=str).encode())
    stamp = site / "expectations" / f".{suite.name}.sha256"
    page = site / "expectations" / f"{suite.name.replace('.', '/')}.html"  # GX's layout: dots become folders
    try:
        if read_bytes(stamp).decode() == digest.hexdigest() and page.exists():
            return []
    except FileNotFoundError:
        pass
    atomic_write(stamp, digest.hexdigest())  # under the site's lock; rendered just after
    return [key.expectation_suite_identifier]


def _context(site: Location, static_ready: bool = False, listed: list | None = None):
    """An ephemeral GX context whose validation results and Data Docs are files in ``site``
    (``static_ready``: its static files need no copying; ``listed``: the result keys its
    builders see, None for all)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    defaults = InMemoryStoreBackendDefaults()
    backend = {"module_name": "mlpipe.validation.gx_store", "class_name": "LocationStoreBackend",
               "static_ready": static_ready, "listed": listed}
    defaults.stores[defaults.validation_results_store_name]["store_backend"] = {
        **backend, "base_directory": str(site / "results")}
    defaults.data_docs_sites = {SITE: {
        "class_name": "SiteBuilder", "show_how_to_buttons": False,
        "store_backend": {**backend, "base_directory": str(site)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "validation_results_limit": INDEX_DAYS},
        # the limit is the index's only: a backfilled old day still gets its page
        "site_section_builders": {"profiling": "None",
                                  "validations": {"validation_results_limit": None}}}}
    context = gx.get_context(project_config=DataContextConfig(store_backend_defaults=defaults), mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context
