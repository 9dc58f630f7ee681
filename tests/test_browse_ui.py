"""What a researcher sees in the MLflow UI, checked in a real (headless) Chromium: a tiny real
sweep is run with `scalelab run` against a real `mlflow server` and reported with `scalelab
report`; the experiment page lists the parent run with its trials nested under it, a trial shows
its params, a metrics chart and config.yaml, `scalelab ui EXPERIMENT`'s link lists the trials
sorted by loss, the parent shows the report with its figures, a claimed trial that has not
started is not shown as running. Also `scalelab ui` started as a process, fetched over HTTP and
stopped by pid. Screenshots of a failing browser check land in the folder named in the failure
message; with SCALELAB_UI_SHOTS=1 the pictures of the docs are saved under docs/ui/
(compare.png, runs-by-loss.png, report.png, queued.png)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from helpers import (MlflowServer, complete_trials, free_port, start_scalelab, study_storage, sweep_runs,
                     wait_http, write_search_sweep, write_sweep)
from analysis.cli import REPORT_ARTIFACT
from orchestrator.claims import SCHEDULED
from orchestrator.cli import main
from orchestrator.run_writes import SweepTracker
from orchestrator.spec import load_sweep
from orchestrator.ui_cli import LOSS, SHARED_VIEW_TAG, VIEW_KEY, column
from trainer.config import UserError

pytestmark = pytest.mark.timeout(600)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPO = Path(__file__).resolve().parent.parent
SHOT_DIR = REPO / "test-artifacts" / "browse-ui"


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (./dev installs it: pip install -e .[test])")
    if not CHROMIUM:
        pytest.skip("no chromium on PATH (./dev installs the Debian package: apt-get install -y chromium)")
    return sync_playwright


@pytest.fixture(scope="module")
def browsed_sweep(tmp_path_factory):
    """A real sweep (2 widths x 2 LRs) run and reported against a real mlflow server."""
    tmp = tmp_path_factory.mktemp("browse")  # (conftest's server fixture is per test: this one is per module)
    server = MlflowServer(tmp)
    server.start()
    try:
        path = write_sweep(tmp, "browse", base={"steps": 30, "eval_interval": 5}, grid={"lr": [1e-3, 3e-3]},
                           concurrency=2)
        doc = yaml.safe_load(path.read_text())  # the width is swept: not in base
        doc["base"].pop("d_model")
        doc["grid"] = {"d_model": [64, 128], **doc["grid"]}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        ran = start_scalelab(["run", "browse.yaml", "--tracking-uri", server.uri, "--storage", str(tmp / "store")],
                             tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = ran.communicate(timeout=400)
        assert ran.returncode == 0, output[-3000:]
        cwd = os.getcwd()
        os.chdir(tmp)  # as the sweep's own folder would be
        try:
            assert main(["report", "browse", "--tracking-uri", server.uri, "--out", str(tmp / "report"),
                         "--n-boot", "20"]) == 0
        finally:
            os.chdir(cwd)
        client, (parent,), trials = sweep_runs(server.uri, "browse")
        yield server.uri, client.get_experiment_by_name("browse").experiment_id, parent, trials
    finally:
        server.stop()


class Browser:
    """One headless Chromium page; `check(name)` screenshots the page when its block fails."""

    def __init__(self, page, shots: Path):
        self.page, self.shots = page, shots

    def open(self, url: str):
        """A fresh load: hash navigation inside the app can keep the previous run's artifact list."""
        self.page.goto("about:blank")
        self.page.goto(url)
        return self.page

    def check(self, name: str):
        browser = self

        class _Ctx:
            def __enter__(self):
                return browser.page

            def __exit__(self, kind, err, tb):
                if kind is None:
                    return False
                browser.shots.mkdir(parents=True, exist_ok=True)
                shot = browser.shots / f"{name}.png"
                browser.page.screenshot(path=str(shot), full_page=True)
                raise AssertionError(f"{name}: {err} (screenshot: {shot}, folder {browser.shots})") from err

        return _Ctx()


@pytest.fixture(scope="module")
def chromium():
    sync_playwright = _playwright()
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield chrome
        finally:
            chrome.close()


@pytest.fixture
def browser(chromium):
    """A fresh context per test: the UI keeps state (expanded runs, view mode) in local storage."""
    context = chromium.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield Browser(page, SHOT_DIR)
    finally:
        context.close()


EXPAND = 'button[data-component-id*="runnamecellrenderer"]'  # the +/- before a parent run's name
CLOSE_ASSISTANT = 'button[data-component-id="mlflow.assistant.chat_panel.close"]'
SHOT_SIZE = {"width": 1280, "height": 800}


def save_shot(page, name: str, arrange=None) -> None:
    """docs/ui/<name>.png at SHOT_SIZE, without the assistant panel, when SCALELAB_UI_SHOTS=1;
    `arrange()` runs once the page has that size (e.g. to scroll)."""
    if not os.environ.get("SCALELAB_UI_SHOTS"):
        return
    page.set_viewport_size(SHOT_SIZE)
    if page.locator(CLOSE_ASSISTANT).count():
        page.locator(CLOSE_ASSISTANT).first.click()
    page.wait_for_timeout(1500)  # let the layout settle for the picture
    if arrange:
        arrange()
        page.wait_for_timeout(500)
    out = REPO / "docs" / "ui" / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out))


def test_the_experiment_lists_the_sweep_with_its_trials_nested(browsed_sweep, browser):
    server, exp_id, parent, trials = browsed_sweep
    assert len(trials) == 4
    labels = [t.data.tags["mlflow.runName"] for t in trials]
    with browser.check("experiment-page") as page:
        browser.open(f"{server}/#/experiments/{exp_id}/runs")
        page.get_by_text(parent.info.run_name, exact=True).first.wait_for()
        for label in labels:  # collapsed: the trials are not listed at the top level
            assert page.get_by_text(label, exact=True).count() == 0, f"{label} listed before expanding"
        page.locator(EXPAND).first.click()
        for label in labels:
            page.get_by_text(label, exact=True).first.wait_for()


def test_a_trial_shows_params_metrics_chart_and_config(browsed_sweep, browser):
    server, exp_id, _, trials = browsed_sweep
    trial = trials[0]
    run_url = f"{server}/#/experiments/{exp_id}/runs/{trial.info.run_id}"
    with browser.check("trial-overview") as page:
        browser.open(run_url)
        page.get_by_text(trial.info.run_name, exact=True).first.wait_for()
        page.get_by_text("Parameters", exact=False).first.wait_for()
        page.get_by_text("d_model", exact=True).first.wait_for()
        page.get_by_text("final_val_loss", exact=True).first.wait_for()
    with browser.check("trial-metrics") as page:
        browser.open(run_url + "/model-metrics")
        page.get_by_placeholder("Search metric charts").fill("val_loss")
        page.get_by_text("val_loss", exact=True).first.wait_for()
        page.get_by_text("act", exact=True).wait_for(state="detached")  # the search filters the charts
        page.locator(".js-plotly-plot").first.wait_for()  # a drawn chart
    with browser.check("trial-artifacts") as page:
        browser.open(run_url + "/artifacts")
        page.get_by_text("multipliers.csv", exact=True).first.wait_for()
        page.get_by_text("config.yaml", exact=True).first.click()
        page.get_by_text(f"d_model: {trial.data.params['d_model']}", exact=False).first.wait_for()


def test_the_parent_shows_the_report_with_its_figures(browsed_sweep, browser):
    """report/<report id>/report.html, opened in the parent's artifacts, shows its heading and
    figures that loaded (an <img> with a width, not link text); figures/ holds the files."""
    server, exp_id, parent, _ = browsed_sweep
    (folder,) = MlflowClient(server).list_artifacts(parent.info.run_id, REPORT_ARTIFACT)
    report_id = os.path.basename(folder.path)
    with browser.check("parent-report") as page:
        browser.open(f"{server}/#/experiments/{exp_id}/runs/{parent.info.run_id}/artifacts")
        page.get_by_text(REPORT_ARTIFACT, exact=True).first.click()
        page.get_by_text(report_id, exact=True).first.click()
        page.get_by_text("summary.json", exact=True).first.wait_for()
        page.get_by_text("report.html", exact=True).first.click()
        report = page.frame_locator("iframe.mlflow-html-iframe")
        report.get_by_text("scalelab report: browse", exact=True).wait_for()  # its heading, rendered
        figure = report.locator("figure img").first
        figure.wait_for()
        figure.scroll_into_view_if_needed()
        widths = report.locator("img").evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : -1)")
        assert widths and all(w > 0 for w in widths), f"figures not loaded (naturalWidth per <img>: {widths})"
        # the picture: the report scrolled to its first figure, a little of the text above it in view
        save_shot(page, "report", lambda: figure.evaluate(
            "img => img.ownerDocument.defaultView.scrollBy(0, img.getBoundingClientRect().top - 140)"))
    with browser.check("parent-report-files") as page:
        page.get_by_text("figures", exact=True).first.click()
        page.get_by_text("training_curves.png", exact=True).first.wait_for()


def test_scalelab_ui_opens_the_trials_sorted_by_loss(browsed_sweep, browser, capsys):
    """`scalelab ui EXPERIMENT` against a server prints the link of the answer: the trials sorted
    by final_val_loss (best first), with the loss and the swept params as columns."""
    server, _, _, trials = browsed_sweep
    assert main(["ui", "browse", "--tracking-uri", server]) == 0
    url = capsys.readouterr().out.strip().removeprefix("MLflow UI: ")
    assert url.startswith(server + "/#/experiments/") and url.endswith(f"/runs?viewStateShareKey={VIEW_KEY}")
    by_loss = sorted(trials, key=lambda t: t.data.metrics[LOSS])
    loss_cells = f'.ag-row [col-id="{column("metrics", LOSS)}"]'
    with browser.check("runs-by-loss") as page:
        browser.open(url)
        page.wait_for_function(f"document.querySelectorAll({loss_cells!r}).length >= {len(trials)}")
        for param in ("d_model", "lr"):  # the swept params are columns; steps (not swept) is not
            assert page.locator(f'.ag-row [col-id="{column("params", param)}"]').count() == len(trials)
        assert page.locator(f'.ag-row [col-id="{column("params", "steps")}"]').count() == 0
        rows = page.locator(loss_cells).evaluate_all(
            "cells => cells.map(c => [Number(c.closest('.ag-row').getAttribute('row-index')), c.innerText])")
        shown = [float(text) for _, text in sorted(rows)]
        assert len(shown) == len(trials) and shown == sorted(shown), f"loss column not sorted: {rows}"
        assert shown == pytest.approx([t.data.metrics[LOSS] for t in by_loss], rel=1e-3)
        names = page.locator('.ag-row [col-id="attributes.`Run Name`"]').evaluate_all(
            "cells => cells.map(c => [Number(c.closest('.ag-row').getAttribute('row-index')), c.innerText])")
        order = [text for _, text in sorted(names)]
        for text, trial in zip(order, by_loss):
            assert trial.info.run_name in text, f"row order {order} is not the loss order"
        save_shot(page, "runs-by-loss")


def test_comparing_the_lr_curves_of_one_width(browsed_sweep, browser):
    """docs/running.md "Browsing in the MLflow UI": filter one width, expand, chart view, val_loss."""
    server, exp_id, _, trials = browsed_sweep
    wide = sorted(t.data.tags["mlflow.runName"] for t in trials if t.data.params["d_model"] == "128")
    narrow = [t.data.tags["mlflow.runName"] for t in trials if t.data.params["d_model"] != "128"]
    assert len(wide) == 2
    with browser.check("compare") as page:
        browser.open(f"{server}/#/experiments/{exp_id}/runs")
        page.get_by_test_id("search-box").fill("params.d_model = '128'")
        page.get_by_test_id("search-box").press("Enter")
        page.get_by_text("3 matching runs").wait_for()  # the two trials and their parent
        page.locator(EXPAND).first.click()
        page.locator("label:has(input[value=CHART])").click()
        page.get_by_placeholder("Search metric charts").fill("val_loss")
        # the parent's best_final_val_loss/... charts come first, and the UI draws a chart once in view
        page.get_by_text("Model metrics", exact=False).first.hover()
        for _ in range(20):
            if page.get_by_text(f"{wide[0]} (val_loss)", exact=True).count():
                break
            page.mouse.wheel(0, 300)
            page.wait_for_timeout(500)
        for label in wide:  # legend of the charts (the run list truncates long names)
            page.get_by_text(f"{label} (val_loss)", exact=True).first.wait_for(state="attached")
        for label in narrow:
            assert page.get_by_text(label, exact=False).count() == 0, f"{label} shown though filtered out"
        page.wait_for_timeout(1500)  # let the chart animation settle for the picture
        if os.environ.get("SCALELAB_UI_SHOTS"):
            out = REPO / "docs" / "ui" / "compare.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))



CREATED_ICON = '[col-id="runDateAndNestInfo"] svg'  # the run list's status icon, in the Created cell


def test_a_queued_trial_is_not_shown_as_running(mlflow_server, browser, tmp_path):
    """A sweep as `scalelab run` leaves it when training starts: both trials claimed (their runs
    SCHEDULED), then one starts (start_child: RUNNING). MLflow's run list draws one clock icon
    for both statuses (RunStatusIcon, MLflow 3.17), so the list tells them apart by its status
    filter, and each trial's page names its status."""
    spec = load_sweep(str(write_sweep(tmp_path, "queued", grid={"lr": [1e-3, 3e-3]})))
    started, queued = trials = spec.trials()
    tracker = SweepTracker(mlflow_server, spec.experiment, spec.name, spec.mode)
    mine, _, _ = tracker.claim(trials)
    assert len(mine) == 2
    tracker.start_child(started, n_params=None)
    run_ids = {t.label: tracker.children[t.hash].run_id for t in trials}
    client = MlflowClient(mlflow_server)
    assert [client.get_run(run_ids[t.label]).info.status for t in trials] == ["RUNNING", SCHEDULED]
    runs_url = f"{mlflow_server}/#/experiments/{tracker.experiment_id}/runs"
    with browser.check("queued-list") as page:
        browser.open(runs_url)
        page.get_by_text(spec.name, exact=True).first.wait_for()
        page.locator(EXPAND).first.click()
        for trial in trials:
            page.get_by_text(trial.label, exact=True).first.wait_for()
        icons = {t.label: page.locator(".ag-row").filter(has=page.get_by_text(t.label, exact=True))
                 .locator(CREATED_ICON).first.evaluate("svg => svg.outerHTML") for t in trials}
        assert icons[queued.label] == icons[started.label], "MLflow now draws a queued run apart: update the README"
        for status, shown, hidden in (("RUNNING", started, queued), (SCHEDULED, queued, started)):
            page.get_by_test_id("search-box").fill(f"attributes.status = '{status}'")
            page.get_by_test_id("search-box").press("Enter")
            page.get_by_text(hidden.label, exact=True).wait_for(state="detached")
            page.get_by_text(shown.label, exact=True).first.wait_for()
    for trial, status in ((started, "Running"), (queued, "Scheduled")):
        with browser.check(f"queued-{status.lower()}-run") as page:
            browser.open(f"{runs_url}/{run_ids[trial.label]}")
            page.get_by_text(trial.label, exact=True).first.wait_for()
            box = page.get_by_test_id("key-value-Status").get_by_role("status")  # "About this run"
            box.wait_for()
            assert box.inner_text().strip() == status, f"{trial.label}: status {box.inner_text()!r}"
            if trial is queued:
                save_shot(page, "queued")  # its page: Status Scheduled, its claim in the tags


@pytest.mark.slow  # an MLflow server, started by `scalelab ui`
def test_scalelab_ui_serves_the_local_store(tmp_path):
    """`scalelab ui EXPERIMENT` started as a process: prints the link of the experiment's loss
    view, serves the UI and this store's experiments on 127.0.0.1, stops when its process group
    is ended."""
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    exp = MlflowClient(tracking_uri=uri).create_experiment("seen-in-ui")
    port = free_port()
    log = tmp_path / "ui.log"
    proc = start_scalelab(["ui", "seen-in-ui", "--tracking-uri", uri, "--port", str(port)], tmp_path, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", MlflowServer.READY_S, proc, log)
        assert f"MLflow UI: {url}/#/experiments/{exp}/runs?viewStateShareKey={VIEW_KEY}  (runs from" in log.read_text()
        with urllib.request.urlopen(url + "/", timeout=10) as page:
            assert "<title>MLflow</title>" in page.read().decode()
        api = url + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=seen-in-ui"
        with urllib.request.urlopen(api, timeout=10) as answer:
            assert '"seen-in-ui"' in answer.read().decode()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    deadline = time.time() + 30  # the server's workers finish their requests, then exit
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).close()
            time.sleep(0.5)
        except OSError:
            break
    else:
        pytest.fail(f"{url} still answers 30 s after its process group was ended")


def _two_trials(uri: str, name: str = "seen-in-ui") -> str:
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(name)
    for lr, loss in (("0.001", 3.2), ("0.003", 3.0)):
        run = client.create_run(exp, tags={"scalelab.kind": "trial"})
        for key, value in (("lr", lr), ("d_model", "64"), ("steps", "30")):
            client.log_param(run.info.run_id, key, value)
        client.log_metric(run.info.run_id, LOSS, loss)
    return exp


def test_scalelab_ui_saves_the_loss_view_on_the_experiment(tmp_path):
    from orchestrator.ui_cli import loss_view_path

    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    exp = _two_trials(uri)
    assert loss_view_path(uri, "seen-in-ui") == f"/#/experiments/{exp}/runs?viewStateShareKey={VIEW_KEY}"
    view = json.loads(MlflowClient(tracking_uri=uri).get_experiment(exp).tags[SHARED_VIEW_TAG + VIEW_KEY])
    assert view == {"searchFilter": "tags.`scalelab.kind` = 'trial'", "orderByKey": "metrics.`final_val_loss`",
                    "orderByAsc": True, "selectedColumns": ["metrics.`final_val_loss`", "tags.`scalelab.outcome`",
                                                            "params.`lr`"],
                    "columnOrder": ["attributes.`Run Name`", "metrics.`final_val_loss`", "tags.`scalelab.outcome`"],
                    "columnWidths": {"metrics.`final_val_loss`": 150, "tags.`scalelab.outcome`": 150}}
    with pytest.raises(UserError, match="no experiment 'nope' .* experiments there: Default, seen-in-ui"):
        loss_view_path(uri, "nope")


def test_scalelab_ui_without_write_access_links_the_sort_alone(tmp_path, monkeypatch, capsys):
    from mlflow.exceptions import MlflowException

    from orchestrator.ui_cli import loss_view_path

    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    exp = _two_trials(uri)

    def refuse(*args, **kwargs):
        raise MlflowException("Permission denied")

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", refuse)
    path = loss_view_path(uri, "seen-in-ui")
    assert path == (f"/#/experiments/{exp}/runs?searchFilter=tags.%60scalelab.kind%60%20%3D%20%27trial%27"
                    "&orderByKey=metrics.%60final_val_loss%60&orderByAsc=true")
    assert "could not save the view on the experiment (Permission denied)" in capsys.readouterr().err


@pytest.mark.parametrize("server", ["http://127.0.0.2:5000/", "https://127.0.0.3"])  # only printed, never reached
def test_scalelab_ui_with_a_server_prints_its_url(server, capsys):
    assert main(["ui", "--tracking-uri", server]) == 0
    assert capsys.readouterr().out.strip() == f"MLflow UI: {server.rstrip('/')}"


def test_scalelab_ui_without_a_store_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["ui"]) == 2
    assert "no MLflow database at" in capsys.readouterr().err


def test_experiment_url_names_the_experiment_page_once_it_exists(browsed_sweep):
    from orchestrator.links import experiment_url

    server, exp_id, _, _ = browsed_sweep
    assert experiment_url(server + "/", "browse") == f"{server}/#/experiments/{exp_id}"
    assert experiment_url(server, "not-yet") == f"{server} (experiment 'not-yet')"
    assert experiment_url("http://127.0.0.1:9", "x", timeout=2) == "http://127.0.0.1:9 (experiment 'x')"


def test_a_submitted_job_carries_the_mlflow_experiment_url(browsed_sweep, tmp_path, monkeypatch):
    """The Ray Job's metadata and its first log line name the experiment's page in the MLflow UI."""
    from orchestrator import jobs

    server, exp_id, _, _ = browsed_sweep
    submitted = {}

    class FakeJobClient:  # the real submission is tests/test_cluster.py (slow); here: what is sent
        def submit_job(self, **kwargs):
            submitted.update(kwargs)
            return kwargs["submission_id"]

    monkeypatch.setattr(jobs, "client", lambda address: FakeJobClient())
    monkeypatch.chdir(tmp_path)
    write_sweep(tmp_path, "browse")  # same experiment name as the sweep that ran
    jobs.submit_sweep("browse.yaml", "http://127.0.0.1:9", tracking_uri=server)
    url = f"{server}/#/experiments/{exp_id}"
    assert submitted["metadata"]["mlflow_experiment"] == url
    first = subprocess.run(["sh", "-c", submitted["entrypoint"].split(" && ", 1)[0]],
                           capture_output=True, text=True).stdout
    assert first == f"MLflow experiment: {url}\n"
    assert " && python -m orchestrator.cli run browse.yaml" in submitted["entrypoint"]


def test_validate_prints_the_optuna_dashboard_command_of_a_search_sweep(tmp_path, capsys):
    study = study_storage(tmp_path)
    write_search_sweep(tmp_path, "search-lr", 2)
    write_sweep(tmp_path, "grid-lr", grid={"lr": [1e-3]})
    assert main(["validate", str(tmp_path / "search-lr.yaml")]) == 0
    assert f"optuna-dashboard {study}" in capsys.readouterr().out
    assert main(["validate", str(tmp_path / "grid-lr.yaml")]) == 0
    assert "optuna-dashboard" not in capsys.readouterr().out


def test_search_trials_carry_their_mlflow_run_id_and_run_prints_the_dashboard_command(ray_local, tmp_path):
    """A tiny real search sweep: every complete Optuna trial names its MLflow child run (user
    attribute mlflow_run_id), whose lr is the trial's lr; the run ends with optuna-dashboard."""
    import io

    from orchestrator.runner import RunOptions, run_sweep
    from orchestrator.spec import load_sweep

    study = study_storage(tmp_path)
    path = write_search_sweep(tmp_path, "search-link", 2, study_name="link-study")
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    out = io.StringIO()
    run_sweep(load_sweep(str(path)), RunOptions(tracking_uri=uri, storage=str(tmp_path / "store"), out=out))
    assert f"optuna-dashboard {study}" in out.getvalue()

    trials = complete_trials(study, "link-study")
    assert len(trials) == 2
    client = MlflowClient(tracking_uri=uri)
    seen = set()
    for t in trials:
        run_id = t.user_attrs.get("mlflow_run_id")
        assert run_id, f"trial {t.number} has no mlflow_run_id: {t.user_attrs}"
        run = client.get_run(run_id)
        assert run.data.tags["scalelab.kind"] == "trial"
        assert float(run.data.params["lr"]) == pytest.approx(t.params["lr"], rel=1e-9)
        seen.add(run_id)
    assert len(seen) == 2
