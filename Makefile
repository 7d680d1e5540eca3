# Slipway. `make up` runs the portal with its lab fleet; `make test` runs the whole suite.
# Both do all set-up on a fresh Debian machine (as root) and are safe to run again.
SHELL := /bin/bash
PY := .venv/bin/python
MANAGE := $(PY) manage.py
PG_URL = postgres://slipway:$$(cat var/pg-password)@127.0.0.1:5432/slipway

.PHONY: up down test test-together test-sqlite test-sqlite-db test-postgres test-postgres-lab lint setup lab bench bench-scale

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
# database; tests that touch no database, the lab and the browser run once. The lab, browser and
# CLI-on-lab tests (their own test database and broker) start at once; beside them, at a lower
# CPU priority (nice 19) so the lab's timings keep theirs, the plain tests on PostgreSQL (a test database
# and broker database of their own), then on SQLite, then the CLI's own tests. The plain lane
# starts with lint (its failure fails the run, without holding back the lab tests' start), then
# the Debian image builds (tests/builds, a run of their own: pytest-django would
# put these database-free tests after the others): the trees they build are the ones the
# runtime tests on the lab reuse later (the lab lane reaches them minutes in).
test: export WITH_POSTGRES=1
test: setup lab test-together

# The CLI's own tests (its client against the portal under daphne, no lab) ride along on SQLite.
CLI_PLAIN = tests/cli/test_cli.py tests/cli/test_cli_parts.py
PLAIN_PG_URL = postgres://slipway:$$(cat var/pg-password)@127.0.0.1:5432/slipway_plain
PLAIN_BROKER = redis://127.0.0.1:6379/14
# The API fuzz hunts answers of 500, which come from the database's limits: it runs on
# PostgreSQL, the production database, and not again on SQLite, the demo's (half the SQLite
# pass's time, taken from the CPU the lab tests share).
SQLITE_SKIP = --deselect tests/plain/test_api_fuzz.py::test_no_input_makes_the_api_answer_500

test-together:
	@mkdir -p var/log; \
	( export TEST_BROKER_URL=$(PLAIN_BROKER); \
	  nice -n 19 $(MAKE) --no-print-directory lint; l=$$?; \
	  DATABASE_URL=$(PLAIN_PG_URL) nice -n 19 $(PY) -m pytest tests/builds $(PYTEST_ARGS); d=$$?; \
	  DATABASE_URL=$(PLAIN_PG_URL) nice -n 19 $(PY) -m pytest tests/plain $(PYTEST_ARGS); a=$$?; \
	  SLIPWAY_TEST_DB=test-sqlite-db.sqlite3 SLIPWAY_DB_TESTS_ONLY=1 nice -n 19 $(PY) -m pytest tests/plain $(SQLITE_SKIP) $(PYTEST_ARGS); b=$$?; \
	  SLIPWAY_TEST_DB=test-sqlite-cli.sqlite3 nice -n 19 $(PY) -m pytest $(CLI_PLAIN) $(PYTEST_ARGS); c=$$?; \
	  test $$l -eq 0 -a $$d -eq 0 -a $$a -eq 0 -a $$b -eq 0 -a $$c -eq 0 ) > var/log/test-plain.log 2>&1 & plain=$$!; \
	$(MAKE) --no-print-directory test-postgres-lab; lab=$$?; \
	wait $$plain; pl=$$?; \
	echo "== lint, the Debian image builds, the plain tests on PostgreSQL, then on SQLite, then the CLI's own (var/log/test-plain.log):"; \
	cat var/log/test-plain.log; test $$lab -eq 0 -a $$pl -eq 0

# Every lab test's time (set-up, call and teardown together) in var/log/test-lab.xml.
test-postgres-lab:
	DATABASE_URL=$(PG_URL) $(PY) -m pytest tests/docker tests/browser tests/cli/test_cli_on_lab.py --junitxml=var/log/test-lab.xml $(PYTEST_ARGS)

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
