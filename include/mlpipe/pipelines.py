"""Which pipelines this deployment runs: every spec file in the pipelines folder
(``MLPIPE_PIPELINES_DIR``, default include/pipelines), or just ``MLPIPE_SPEC`` when it is
set. A pipeline is named by its spec's ``name``; its DAGs are ``<name>__<dag>``.

Light on purpose (PyYAML and pydantic only): the DAG files call it while they are parsed.
"""

from __future__ import annotations

from pathlib import Path

from mlpipe.errors import SpecError
from mlpipe.settings import Settings, get_settings

SEPARATOR = "__"  # <pipeline>__<dag>: spec names cannot contain it (single underscores only)


def spec_files(settings: Settings | None = None) -> list[Path]:
    """The spec files this deployment runs, sorted by name."""
    settings = settings or get_settings()
    if settings.only_spec is not None:
        return [settings.only_spec]
    folder = settings.pipelines_dir
    if not folder.is_dir():
        raise SpecError(f"{folder}: the pipelines folder (MLPIPE_PIPELINES_DIR) does not exist")
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))


def dag_id(pipeline: str, dag: str) -> str:
    return f"{pipeline}{SEPARATOR}{dag}"


def spec_file(pipeline: str | None = None, settings: Settings | None = None) -> Path:
    """The spec file of the pipeline named ``pipeline``; with no name, the only one (an
    error naming the choices when there are several)."""
    from mlpipe.spec import load_spec

    files = spec_files(settings)
    if not pipeline:
        if len(files) == 1:
            return files[0]
        raise SpecError(f"{len(files)} pipelines are configured ({', '.join(p.stem for p in files)}): name one "
                        "(PIPELINE=name for make, --pipeline name for the CLIs)")
    for path in sorted(files, key=lambda p: p.stem != pipeline):  # the file named like it first
        try:
            if load_spec(path).name == pipeline:
                return path
        except SpecError:
            continue
    raise SpecError(f"no pipeline named {pipeline!r} among {[str(p) for p in files]}")


def main(argv: list[str] | None = None) -> None:
    """``python -m mlpipe.pipelines [--pipeline NAME] [--dag DAG]``: the configured
    pipelines (name and spec file), or the id of one pipeline's DAG (for the Makefile)."""
    import argparse
    import sys

    from mlpipe.spec import load_spec

    parser = argparse.ArgumentParser(prog="python -m mlpipe.pipelines", description=main.__doc__.split("\n")[0])
    parser.add_argument("--pipeline", help="a pipeline's name (default: the only one, when there is one)")
    parser.add_argument("--dag", help="print this DAG's id (ingest, ingest_range, train, score, score_range, monitor, "
                                      "rollback)")
    args = parser.parse_args(argv)
    try:
        if args.dag:
            print(dag_id(load_spec(spec_file(args.pipeline)).name, args.dag))
            return
        for path in spec_files():
            try:
                print(f"{load_spec(path).name:<20} {path}")
            except SpecError as exc:
                print(f"{'(does not load)':<20} {path}: {' '.join(str(exc).split())}")
    except SpecError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
