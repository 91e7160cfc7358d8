# The two commands: `make demo` runs a whole nightly locally, `make test` runs the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

provision:  ## install and start what the local setup needs (its own Docker engine, registries, base images, venv)
	bash scripts/provision.sh

down:  ## stop what the local setup started (its Docker engine, registries, stand-in Slack)
	bash scripts/down.sh

demo:  ## run one whole nightly locally against the sample project and print what it pushed
	bash scripts/demo.sh

up:  ## the Airflow UI on :8080 (airflow standalone) with the project, its pools and local connections
	bash scripts/up.sh

test:  ## run every test (unit, DAG, integration, end to end, faults, system) on 4 workers; PYTEST_ARGS=... to pass more
	bash scripts/test.sh $(PYTEST_ARGS)

check:  ## the fast loop (under 2 minutes): lint, unit and DAG tests; no services
	bash scripts/check.sh $(PYTEST_ARGS)

lint:  ## ruff, mypy, shellcheck, and the generated config schema and tables up to date
	source scripts/local_env.sh && bash scripts/lint.sh

pools:  ## create the Airflow pools of the config
	source scripts/local_env.sh && python -m include.nightly_ci pools

bench:  ## parse-time, rebuild-cache, makespan, history-store and culprit-finder benchmarks
	source scripts/local_env.sh && python benchmarks/parse_time.py && python benchmarks/rebuild_cache.py && python benchmarks/makespan.py && python benchmarks/history.py && python benchmarks/culprit.py

.PHONY: help provision down demo up test check lint pools bench
