# Slipway. `make up` runs the portal with its lab fleet; `make test` runs the whole suite.
# Both do all set-up on a fresh Debian machine (as root) and are safe to run again.
SHELL := /bin/bash
PY := .venv/bin/python
MANAGE := $(PY) manage.py
PG_URL = postgres://slipway:$$(cat var/pg-password)@127.0.0.1:5432/slipway

.PHONY: up down test test-sqlite test-sqlite-db test-postgres test-plain-both test-postgres-lab lint setup lab bench bench-scale

setup:
	@scripts/setup.sh

up: setup
	@$(MANAGE) migrate --noinput -v0
	@$(MANAGE) collectstatic --noinput -v0
	@$(MANAGE) lab up
	@$(MANAGE) seed_demo
	@$(MANAGE) lab vm
	@scripts/services.sh start
	@echo
	@echo "Slipway is up: http://127.0.0.1:$${PORT:-8000}/   (API docs: /api/docs/, admin: /admin/)"
	@echo "Logs in var/log/. Stop everything with: make down"

down:
	@scripts/services.sh stop
	@if [ -x $(PY) ]; then $(MANAGE) lab down; fi

lab: setup
	@$(MANAGE) lab up --no-register

lint:
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/mypy .

# Everything on PostgreSQL (the production database), and on SQLite the plain tests that use the
# database; tests that touch no database, the lab and the browser run once. The plain tests on
# both databases run side by side (CPU work, nothing shared, two cores), then the lab and browser
# tests on their own, since their timings would suffer from the company.
test: export WITH_POSTGRES=1
test: setup lab lint test-plain-both test-postgres-lab

# The CLI's own tests (its client against the portal under daphne, no lab) ride along on SQLite.
CLI_PLAIN = tests/cli/test_cli.py tests/cli/test_cli_parts.py

test-plain-both:
	@mkdir -p var/log; \
	( SLIPWAY_TEST_DB=test-sqlite-db.sqlite3 SLIPWAY_DB_TESTS_ONLY=1 $(PY) -m pytest tests/plain $(PYTEST_ARGS) \
	  && SLIPWAY_TEST_DB=test-sqlite-cli.sqlite3 $(PY) -m pytest $(CLI_PLAIN) $(PYTEST_ARGS) ) \
		> var/log/test-sqlite-db.log 2>&1 & lite=$$!; \
	DATABASE_URL=$(PG_URL) $(PY) -m pytest tests/plain $(PYTEST_ARGS); pg=$$?; \
	wait $$lite; sq=$$?; \
	echo "== on SQLite: the plain tests that use the database, and the CLI's (var/log/test-sqlite-db.log):"; \
	cat var/log/test-sqlite-db.log; test $$pg -eq 0 -a $$sq -eq 0

test-postgres-lab:
	DATABASE_URL=$(PG_URL) $(PY) -m pytest tests/docker tests/browser tests/cli/test_cli_on_lab.py $(PYTEST_ARGS)

test-sqlite:
	$(PY) -m pytest $(PYTEST_ARGS)

test-sqlite-db:
	SLIPWAY_DB_TESTS_ONLY=1 $(PY) -m pytest tests/plain $(PYTEST_ARGS)

test-postgres:
	DATABASE_URL=$(PG_URL) $(PY) -m pytest $(PYTEST_ARGS)

# Figures beside raw Docker on the same lab host, in the same run: bench/results/latest.json.
bench: setup lab
	$(PY) -m bench

# The portal driving 400 instances on 8 lab hosts, on PostgreSQL with two workers (minutes; not
# in CI): bench/results/scale.json.
bench-scale: export WITH_POSTGRES=1
bench-scale: setup
	$(PY) -m bench.scale
