"""The UIs as a person meets them: `make up` (scripts/up.py: Airflow standalone with auth,
and the MLflow UI), driven by headless Chromium (Debian's `chromium` and
`chromium-driver`, which `make install` adds where missing).

Logs in, opens the train DAG and its trigger form (every Param with its description),
has a bad date refused, triggers a run with a valid window and waits for it, opens the
run's grid and a task's log; then opens the registered model in the MLflow UI (the
champion alias, the version's description) and the report index (and from it a day's
Data Docs page). Last, a SIGTERM to `make up` stops every
process it started. Screenshots of each step go to ``test-artifacts/ui/``
(MLPIPE_UI_SCREENSHOTS overrides).

Tests in this module run in order and share one `make up`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from topology import PIPELINE, ROOT, TRAIN, drops, free_port, small_spec

pytestmark = pytest.mark.e2e

DAYS = [dt.date(2013, 1, d) for d in range(1, 11)]
WINDOW = {"window_start": "2013-01-01", "window_end": "2013-01-11", "holdout_days": 2}
SHOTS = Path(os.environ.get("MLPIPE_UI_SCREENSHOTS") or ROOT / "test-artifacts" / "ui")
PREPARE = """
import datetime as dt, sys
from mlpipe.context import Context
from mlpipe.steps import STEPS
ctx = Context.load()
for day in map(dt.date.fromisoformat, sys.argv[1:]):
    for step in ("extract_day", "validate_day", "build_day_features"):
        STEPS[step](ctx, day=day)
"""


def _environment(work: Path) -> dict[str, str]:
    spec = small_spec(work, drops(work, DAYS), {"logreg": {}, "hgb_small": {}})
    return {**os.environ, "AIRFLOW_HOME": str(work / "airflow"), "MLPIPE_DATA_ROOT": str(work / "data"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MLPIPE_ARTIFACTS": str(work / "artifacts"),
            "MLPIPE_SPEC": str(spec), "AIRFLOW__CORE__EXECUTOR": "mlpipe_executor.PreloadingLocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4", "MLPIPE_AIRFLOW_PORT": str(free_port()),
            "MLPIPE_MLFLOW_PORT": str(free_port()), "MLPIPE_UP_TOKEN": uuid.uuid4().hex}


def _started(proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if "MLflow UI:" in log.read_text():
            return
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(1)
    raise AssertionError(f"make up did not come up in {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    work = tmp_path_factory.mktemp("ui")
    env = _environment(work)
    subprocess.run([sys.executable, "-c", PREPARE, *map(str, DAYS)], env=env, check=True, capture_output=True)
    log = work / "up.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts/up.py")], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _started(proc, log)
        logins = json.loads((work / "airflow/simple_auth_manager_passwords.json.generated").read_text())
        yield {"proc": proc, "env": env, "log": log, "logins": logins,
               "airflow": f"http://localhost:{env['MLPIPE_AIRFLOW_PORT']}",
               "mlflow": f"http://localhost:{env['MLPIPE_MLFLOW_PORT']}"}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromium-driver are missing: `make install` adds them (apt, as root)"
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = chromium
    SHOTS.mkdir(parents=True, exist_ok=True)
    session = webdriver.Chrome(options=options, service=Service(driver))
    session.implicitly_wait(2)
    yield session
    session.quit()


def shot(browser, name: str) -> None:
    browser.save_screenshot(str(SHOTS / f"{name}.png"))


def wait_for(browser, condition, timeout: float = 60, what: str = ""):
    """WebDriverWait's until, with a screenshot (``failed-<what>``) when it times out. An
    element the page re-rendered while the condition read it is asked for again."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
            condition, message=what)
    except TimeoutException:
        shot(browser, f"failed-{what.replace(' ', '-')}")
        (SHOTS / f"failed-{what.replace(' ', '-')}.txt").write_text(page_text(browser))
        raise


def button(browser, label: str, scope: str = ""):
    from selenium.webdriver.common.by import By

    return wait_for(browser, lambda b: next((e for e in b.find_elements(By.CSS_SELECTOR, f"{scope} button")
                                             if e.text.strip() == label and e.is_enabled()), None),
                    what=f"button {label!r}")


def page_text(browser) -> str:
    return browser.find_element("tag name", "body").text


def test_the_airflow_ui_logs_in_and_shows_the_train_dag(up, browser):
    from selenium.webdriver.common.by import By

    browser.get(up["airflow"])
    wait_for(browser, lambda b: b.find_elements(By.NAME, "username"), what="login form")[0].send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(up["logins"]["admin"])
    shot(browser, "01-login")
    button(browser, "Sign in").click()
    wait_for(browser, lambda b: "/auth/login" not in b.current_url, what="logged in")
    browser.get(f"{up['airflow']}/dags/{TRAIN}")
    wait_for(browser, lambda b: "evaluate" in page_text(b) and "Trigger" in page_text(b), what="the train DAG")
    shot(browser, "02-train-dag")


def test_the_asset_view_lists_the_features_and_retrain_request_assets(up, browser):
    browser.get(f"{up['airflow']}/assets")
    wait_for(browser, lambda b: f"mlpipe://{PIPELINE}/features" in page_text(b)
                            and f"mlpipe://{PIPELINE}/retrain-request" in page_text(b),
             what="the assets")
    shot(browser, "02b-assets")


def _trigger_form(up, browser):
    browser.get(f"{up['airflow']}/dags/{TRAIN}")
    button(browser, "Trigger").click()
    wait_for(browser, lambda b: "Run Parameters" in page_text(b), what="the trigger form")


def test_the_trigger_form_shows_every_param_with_its_description(up, browser):
    params = _api(up, f"/api/v2/dags/{TRAIN}/details")["params"]
    _trigger_form(up, browser)
    text = page_text(browser)
    for name, param in params.items():
        assert name in text and param["description"] in text, name
    assert "Select one or multiple values" in text  # variants: a pick list of the spec's variants
    shot(browser, "03-trigger-form")


def _set_conf(browser, conf: dict) -> None:
    """Replace the form's configuration JSON, typed one key at a time: the form re-parses
    the editor as it changes, and a burst of keys reaches it out of order."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    button(browser, "Advanced Options", "[role=dialog]").click()
    editor = wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "[role=dialog] .monaco-editor"),
                      what="the configuration editor")[0]
    editor.click()
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).send_keys(Keys.DELETE).perform()
    for key in json.dumps(conf):
        ActionChains(browser).send_keys(key).perform()
        time.sleep(0.03)
    lines = browser.find_element(By.CSS_SELECTOR, "[role=dialog] .monaco-editor .view-lines").text
    assert json.loads(lines.replace("\n", "")) == conf, lines


def _fill_form(browser, window: dict, variants: list[str]) -> None:
    """Fill the Run Parameters as a person does: date pickers, the number box, the pick list."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    for name in ("window_start", "window_end"):
        month_day_year = dt.date.fromisoformat(window[name]).strftime("%m%d%Y")
        browser.find_element(By.ID, f"element_{name}").send_keys(month_day_year)
    browser.find_element(By.CSS_SELECTOR, "[role=dialog] input[role=spinbutton]").send_keys(str(window["holdout_days"]))
    picker = browser.find_element(By.CSS_SELECTOR, "[role=dialog] input[aria-label^='Select one or multiple']")
    for variant in variants:
        picker.send_keys(variant)
        picker.send_keys(Keys.ENTER)


def _api(up, path: str) -> dict:
    """GET an Airflow REST API path as the admin."""
    token = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{up['airflow']}/auth/token", data=json.dumps({"username": "admin", "password": up["logins"]["admin"]})
        .encode(), headers={"Content-Type": "application/json"}), timeout=30).read())["access_token"]
    answer = urllib.request.urlopen(urllib.request.Request(f"{up['airflow']}{path}",
                                                           headers={"Authorization": f"Bearer {token}"}), timeout=30)
    return json.loads(answer.read())


def _runs(up, run_type: str = "manual") -> list[dict]:
    return [r for r in _api(up, f"/api/v2/dags/{TRAIN}/dagRuns")["dag_runs"] if r["run_type"] == run_type]


def test_a_bad_date_is_refused_in_the_form(up, browser):
    _trigger_form(up, browser)
    _set_conf(browser, {"window_start": "2013-02-30"})
    button(browser, "Trigger", "[role=dialog]").click()
    wait_for(browser, lambda b: "is not a 'date'" in page_text(b), what="the refusal")
    assert "Invalid input for param window_start: '2013-02-30' is not a 'date'" in page_text(browser)
    shot(browser, "04-bad-date-refused")
    assert _runs(up) == []  # no manual run (the form unpaused train: its latest weekly run may be queued)


def test_a_run_triggered_from_the_form_succeeds_and_its_log_opens(up, browser):

    _trigger_form(up, browser)
    _fill_form(browser, WINDOW, ["logreg", "hgb_small"])
    shot(browser, "05-trigger-form-filled")
    button(browser, "Trigger", "[role=dialog]").click()
    wait_for(browser, lambda b: "/runs/" in b.current_url, what="the new run's page")
    deadline = time.time() + 420
    while time.time() < deadline and not [r for r in _runs(up) if r["state"] in ("success", "failed")]:
        time.sleep(3)
    (run,) = _runs(up)
    assert run["state"] == "success", run
    assert {k: run["conf"][k] for k in WINDOW} == WINDOW and run["conf"]["variants"] == ["logreg", "hgb_small"]
    # the weekly run the unpaused DAG started (one run at a time: it may still wait for the manual
    # one) is past the dataset's end: plan skips it, so nothing trains or evaluates, and the run
    # is a success, not a failure (collect, all_done, runs over nothing)
    deadline = time.time() + 120
    while time.time() < deadline and any(r["state"] not in ("success", "failed") for r in _runs(up, "scheduled")):
        time.sleep(2)
    scheduled = _runs(up, "scheduled")
    assert scheduled and {r["state"] for r in scheduled} == {"success"}, scheduled
    for weekly in scheduled:
        tis = _api(up, f"/api/v2/dags/{TRAIN}/dagRuns/{weekly['dag_run_id']}/taskInstances")["task_instances"]
        states = {ti["task_id"]: ti["state"] for ti in tis}
        assert states["plan"] == "skipped" and states["evaluate"] == "skipped", states
        assert {state for task, state in states.items() if task.startswith("train_")} == {"skipped"}, states
    browser.get(f"{up['airflow']}/dags/{TRAIN}/runs/{run['dag_run_id']}")
    wait_for(browser, lambda b: "evaluate" in page_text(b) and "success" in page_text(b).lower(), what="the run")
    shot(browser, "06-run-grid")
    browser.get(f"{up['airflow']}/dags/{TRAIN}/runs/{run['dag_run_id']}/tasks/evaluate")
    wait_for(browser, lambda b: "evaluate_and_promote" in page_text(b) or "promot" in page_text(b), timeout=90,
             what="the evaluate task's log")
    shot(browser, "07-task-log")


def test_the_mlflow_ui_shows_the_champion_and_the_version_description(up, browser):
    from mlflow import MlflowClient

    uri = up["env"]["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not the test process's default registry
    champion = client.get_model_version_by_alias("flights", "champion")
    browser.get(f"{up['mlflow']}/#/models/flights")
    wait_for(browser, lambda b: "champion" in page_text(b) and f"Version {champion.version}" in page_text(b),
             what="the registered model page")
    shot(browser, "08-mlflow-model")
    browser.get(f"{up['mlflow']}/#/models/flights/versions/{champion.version}")
    wait_for(browser, lambda b: "This version is the champion" in page_text(b), what="the version description")
    assert "Holdout roc_auc" in page_text(browser)
    shot(browser, "09-mlflow-version")


def test_the_report_index_links_the_days_and_the_train_run(up, browser):
    from selenium.webdriver.common.by import By

    index = Path(up["env"]["MLPIPE_DATA_ROOT"]) / "flights" / "reports" / "index.html"
    browser.get(index.as_uri())
    text = page_text(browser)
    assert "Train runs" in text and "promote" in text and str(DAYS[-1]) in text
    shot(browser, "10-report-index")
    links = {a.text for a in browser.find_elements(By.TAG_NAME, "a")}
    assert {"passed", "Data Docs", "report", "entry"} <= links
    browser.find_element(By.LINK_TEXT, "Data Docs").click()  # the newest day's Data Docs page, from a file
    wait_for(browser, lambda b: "data_docs" in b.current_url and "Expectation" in page_text(b), what="Data Docs")
    shot(browser, "11-data-docs-day")


def _with_token(token: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"MLPIPE_UP_TOKEN={token}".encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_sigterm_stops_everything_make_up_started(up):
    assert len(_with_token(up["env"]["MLPIPE_UP_TOKEN"])) >= 3  # up.py, Airflow's services, the MLflow UI
    up["proc"].send_signal(signal.SIGTERM)
    up["proc"].wait(120)
    deadline = time.time() + 30
    while _with_token(up["env"]["MLPIPE_UP_TOKEN"]) and time.time() < deadline:
        time.sleep(1)
    assert _with_token(up["env"]["MLPIPE_UP_TOKEN"]) == []
    assert "SIGTERM: stopping" in up["log"].read_text()
