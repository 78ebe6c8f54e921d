"""scripts/demo.py's progress line."""

from __future__ import annotations

from harness import load_script  # bench/harness.py, on sys.path through tests/conftest.py


def _demo():
    return load_script("demo")  # a fresh module each time: STAGE_TIMES starts empty


def test_progress_counts_runs_done_failures_running_tasks_and_time_left():
    line = _demo().progress("ingest", {"success": 90, "failed": 10, "running": 4, "queued": 96}, 6, 50.0)
    assert line == "  [    50s] ingest: 100/200 runs done, 10 failed, 6 tasks running, about 50s left"


def test_progress_has_no_estimate_before_the_first_run_or_after_the_last():
    demo = _demo()
    assert demo.progress("train", {"queued": 1}, 0, 3.0).endswith("0/1 runs done, 0 tasks running")
    assert demo.progress("train", {"success": 1}, 0, 90.0).endswith("1/1 runs done, 0 tasks running")


def test_a_phase_records_the_time_from_creating_its_runs_until_all_are_done(monkeypatch, capsys):
    """In-process, with a stand-in scheduler and a fake clock: creating the runs takes 5 s,
    then the runs finish after two 3 s polls, so the phase took 11 s."""
    demo = _demo()
    states = iter([{"queued": 2}, {"success": 1, "running": 1}, {"success": 2}])
    clock = [1000.0]

    class NoScheduler:
        proc = type("Running", (), {"poll": staticmethod(lambda: None)})

        def __init__(self, *args):
            pass

        def stop(self):
            pass

    def create():
        clock[0] += 5

    monkeypatch.setattr(demo, "Service", NoScheduler)
    asked = []
    monkeypatch.setattr(demo, "run_states", lambda selection: asked.append(selection) or next(states))
    monkeypatch.setattr(demo, "running_tasks", lambda dag_ids: 0)
    monkeypatch.setattr(demo.time, "time", lambda: clock[0])
    monkeypatch.setattr(demo.time, "sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    monkeypatch.setattr(demo.sys.stdout, "isatty", lambda: False)

    selection = [("flights__score", ("2013-01-01", "2013-01-02")), ("bikes__score", ("2011-03-01", "2011-03-01"))]
    assert demo.phase("score", selection, create) == {"success": 2}
    assert asked == [selection] * 3  # every pipeline's runs, counted together

    assert demo.STAGE_TIMES == {"score": 11.0}
    out = capsys.readouterr().out
    assert "[     5s] score: 0/2 runs done" in out and "[     8s] score: 1/2 runs done" in out
    assert "score finished in 11s: {'success': 2}" in out


def test_a_phase_stops_with_the_schedulers_log_when_the_scheduler_exits(monkeypatch, tmp_path):
    """In-process: a scheduler that cannot start (a bad executor setting) would leave the
    runs queued for ever; the phase says so instead of waiting."""
    import pytest

    demo = _demo()

    class DeadScheduler:
        proc = type("Exited", (), {"poll": staticmethod(lambda: 1), "returncode": 1})
        log = type("Log", (), {"name": str(tmp_path / "scheduler.log")})

        def __init__(self, *args):
            pass

        def stop(self):
            pass

    monkeypatch.setattr(demo, "Service", DeadScheduler)
    monkeypatch.setattr(demo, "run_states", lambda selection: {"queued": 1})
    monkeypatch.setattr(demo, "running_tasks", lambda dag_ids: 0)
    monkeypatch.setattr(demo.time, "sleep", lambda seconds: None)
    with pytest.raises(SystemExit, match=r"the scheduler exited \(code 1\) during train; its log: .*scheduler.log"):
        demo.phase("train", [("flights__train", ("2013-01-01", "2013-01-01"))], lambda: None)


def test_a_phase_whose_runs_are_all_done_starts_no_scheduler(monkeypatch, capsys):
    """In-process: a second `make demo` on the same window creates nothing new, so the
    phase reports it and never starts a scheduler."""
    demo = _demo()

    class NoScheduler:
        def __init__(self, *args):
            raise AssertionError("a scheduler was started")

    monkeypatch.setattr(demo, "Service", NoScheduler)
    monkeypatch.setattr(demo, "run_states", lambda selection: {"success": 3})
    selection = [("flights__score", ("2013-01-01", "2013-01-03"))]
    assert demo.phase("score", selection, lambda: None) == {"success": 3}
    assert "score: nothing to run: {'success': 3}" in capsys.readouterr().out


def test_each_pipeline_runs_its_spec_demo_window_unless_the_command_line_names_one():
    from types import SimpleNamespace

    from mlpipe.context import Context

    demo, ctx = _demo(), Context.of("flights")  # flights: demo 2013-01-01 .. 2013-12-31, holdout 92
    none = SimpleNamespace(start=None, end=None, holdout_days=None)
    window = demo.Demo.of(ctx, none)
    assert (str(window.start), str(window.end), window.holdout_days) == ("2013-01-01", "2013-12-31", 92)
    assert (str(window.train_end), str(window.holdout_start)) == ("2014-01-01", "2013-10-01")
    assert window.dag("train") == "flights__train"
    short = demo.Demo.of(ctx, SimpleNamespace(start=None, end="2013-01-31", holdout_days=7))
    assert (str(short.start), str(short.end), short.holdout_days) == ("2013-01-01", "2013-01-31", 7)
    bare = demo.Demo.of(ctx.__class__(ctx.settings, ctx.spec.model_copy(update={"demo": None}), ctx.store), none)
    assert (str(bare.start), str(bare.end), bare.holdout_days) == ("2013-01-01", "2013-12-31", 28)  # schedule


def test_an_unknown_pipeline_is_refused_with_the_choices(monkeypatch):
    import pytest

    with pytest.raises(SystemExit, match="no pipeline named 'nope'"):
        _demo().pipelines(["nope"])
