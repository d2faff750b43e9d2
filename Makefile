# churnops: every command a developer needs. `make demo` and `make test` work on a
# fresh machine with Python 3.11; both create .venv on first use.

PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed

# The embedded Airflow: SQLite metadata, DAGs and plugins from this checkout.
export AIRFLOW_HOME := $(CURDIR)/var/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
# LocalExecutor starts one worker per slot; a laptop or a 2-core box needs few.
export AIRFLOW__CORE__PARALLELISM := 4
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN := sqlite:///$(CURDIR)/var/airflow/airflow.db
export PATH := $(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL := 2

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

# Progress for a person: step boundaries and gate verdicts, not Airflow's chatter.
PROGRESS := grep --line-buffered -E '\[(_support|gates\.store|tasks\.[a-z_]+)\]' \
	| sed -u -E 's/^[0-9T:.-]+Z \[[a-z ]+\] //; s/ +\[[a-z_.]+\] loc=.*$$//'

.PHONY: help install demo test test-fast lint bench up clean

help:
	@echo "make demo       set up, run churn_training on synthetic data, print the score"
	@echo "make test       set up and run the whole test suite"
	@echo "make test-fast  the suite without the slow end-to-end tests"
	@echo "make lint       ruff and mypy"
	@echo "make bench      benchmarks under bench/"
	@echo "make up         Airflow UI on http://127.0.0.1:8080 with the churnops DAGs"

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "churnops needs $(PYTHON) on PATH"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

install: $(STAMP)

var/airflow/airflow.db: $(STAMP)
	@mkdir -p var/airflow
	$(BIN)/airflow db migrate >var/airflow/migrate.log 2>&1 \
		|| { cat var/airflow/migrate.log; exit 1; }

demo: var/airflow/airflow.db
	@mkdir -p var/demo
	@status=0; \
	echo "== 1/3 churn_training on synthetic customers (log: var/demo/training.log)"; \
	CHURNOPS_EMBEDDED=1 $(BIN)/airflow dags test churn_training 2>&1 \
		| tee var/demo/training.log | $(PROGRESS) || status=1; \
	echo "== 2/3 a week of live traffic through the prediction service, late labels"; \
	CHURNOPS_EMBEDDED=1 $(BIN)/churnops simulate-traffic --days 7 \
		>var/demo/traffic.log 2>&1 && tail -n 12 var/demo/traffic.log || status=1; \
	echo "== 3/3 churn_monitoring (log: var/demo/monitoring.log)"; \
	CHURNOPS_EMBEDDED=1 $(BIN)/airflow dags test churn_monitoring 2>&1 \
		| tee var/demo/monitoring.log | $(PROGRESS) || status=1; \
	echo "== ML Test Score (churnops report)"; \
	$(BIN)/churnops report; \
	if [ $$status -ne 0 ]; then echo "A step failed: see var/demo/*.log"; fi; \
	exit $$status

test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/bench_data.py
	$(BIN)/python bench/bench_model.py

up: var/airflow/airflow.db
	@echo "Airflow UI: http://127.0.0.1:8080  user: admin"
	@echo "password: printed by Airflow below, and kept in"
	@echo "  var/airflow/simple_auth_manager_passwords.json.generated"
	@echo "The ML Test Score is under 'ML Test Score' in the navigation. Ctrl-C stops."
	CHURNOPS_EMBEDDED=1 AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=8080 \
		$(BIN)/airflow standalone

clean:
	rm -rf var/
