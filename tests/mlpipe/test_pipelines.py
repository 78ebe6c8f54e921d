"""Which pipelines a deployment runs (in-process): the folder's specs, or MLPIPE_SPEC alone;
a pipeline found by name; the only one by default; errors that name the choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe import pipelines
from mlpipe.errors import SpecError

FLIGHTS = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "flights.yaml"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    text = FLIGHTS.read_text()
    (tmp_path / "flights.yaml").write_text(text)
    (tmp_path / "second.yml").write_text(text.replace("name: flights", "name: delays"))
    (tmp_path / "broken.yaml").write_text("name: [oops")
    (tmp_path / "notes.txt").write_text("not a spec")
    monkeypatch.delenv("MLPIPE_SPEC", raising=False)
    monkeypatch.setenv("MLPIPE_PIPELINES_DIR", str(tmp_path))
    return tmp_path


def test_every_yaml_file_of_the_folder_is_a_pipeline(folder):
    assert [p.name for p in pipelines.spec_files()] == ["broken.yaml", "flights.yaml", "second.yml"]


def test_mlpipe_spec_runs_just_that_spec(folder, monkeypatch):
    monkeypatch.setenv("MLPIPE_SPEC", str(folder / "second.yml"))
    assert pipelines.spec_files() == [folder / "second.yml"]
    assert pipelines.spec_file() == folder / "second.yml"  # the only one


def test_a_pipeline_is_found_by_its_spec_name_not_its_file_name(folder):
    assert pipelines.spec_file("delays") == folder / "second.yml"
    assert pipelines.spec_file("flights") == folder / "flights.yaml"
    with pytest.raises(SpecError, match="no pipeline named 'nope'"):
        pipelines.spec_file("nope")


def test_with_several_pipelines_a_name_is_needed(folder):
    with pytest.raises(SpecError, match=r"3 pipelines are configured \(broken, flights, second\): name one"):
        pipelines.spec_file()


def test_a_missing_folder_is_named(monkeypatch, tmp_path):
    monkeypatch.delenv("MLPIPE_SPEC", raising=False)
    monkeypatch.setenv("MLPIPE_PIPELINES_DIR", str(tmp_path / "absent"))
    with pytest.raises(SpecError, match="absent: the pipelines folder"):
        pipelines.spec_files()


def test_dag_ids_and_the_cli(folder, capsys):
    assert pipelines.dag_id("flights", "train") == "flights__train"
    pipelines.main(["--pipeline", "delays", "--dag", "train"])
    assert capsys.readouterr().out == "delays__train\n"
    pipelines.main([])
    out = capsys.readouterr().out
    assert "flights" in out and "delays" in out and "(does not load)" in out and "broken.yaml" in out
    with pytest.raises(SystemExit, match="name one"):
        pipelines.main(["--dag", "train"])


def test_a_double_underscore_cannot_be_in_a_pipeline_name(tmp_path):
    from mlpipe.spec import load_spec

    (tmp_path / "bad.yaml").write_text(FLIGHTS.read_text().replace("name: flights", "name: my__flights"))
    with pytest.raises(SpecError, match="name"):
        load_spec(tmp_path / "bad.yaml")


@pytest.mark.parametrize("cli, args", [("ledger", []), ("monitoring", ["--from", "2013-01-01", "--to", "2013-01-02"]),
                                       ("shadow", ["--from", "2013-01-01", "--to", "2013-01-02"]),
                                       ("ingest", ["--logical-date", "2013-01-01"])])
def test_every_cli_takes_the_pipeline_by_name_and_names_the_choices(folder, monkeypatch, tmp_path, cli, args, capsys):
    import importlib

    monkeypatch.setenv("MLPIPE_DATA_ROOT", str(tmp_path / "data"))
    main = importlib.import_module(f"mlpipe.{cli}").main
    with pytest.raises(SystemExit, match="3 pipelines are configured .*: name one"):
        main(args)
    main([*args, "--pipeline", "delays"])  # an empty pipeline: nothing to show, no error
    if cli == "ingest":
        assert capsys.readouterr().out == "2013-01-02\n"
