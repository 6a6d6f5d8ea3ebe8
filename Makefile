# The two commands of the README: `make demo` (the workspace with demo data on this machine)
# and `make test` (the whole test suite). Everything else is a step of those.
PY      := .venv/bin/python
STORE   ?= var/store
KEYFILE ?= var/keys/master.key
export WORKSPACE_HOME ?= $(CURDIR)/var

.PHONY: demo test bootstrap image demo-data up stop status logins test-unit test-integration test-browser bench clean-demo

demo: bootstrap image demo-data up logins

bootstrap:
	@bash scripts/bootstrap.sh

image: bootstrap
	@$(PY) images/build.py

demo-data: bootstrap
	@.venv/bin/ingest demo --store $(STORE) --key-file $(KEYFILE)

up:
	@.venv/bin/workspace-hub up

logins:
	@.venv/bin/workspace-hub logins

stop:
	@.venv/bin/workspace-hub down

status:
	@.venv/bin/workspace-hub status

test:
	@bash scripts/bootstrap.sh --browser
	@$(PY) images/build.py
	@$(PY) -m pytest -q -p no:cacheprovider tests

test-unit:
	@$(PY) -m pytest -q tests/unit

test-integration:
	@$(PY) -m pytest -q tests/integration

test-browser:
	@$(PY) -m pytest -q tests/browser

bench:
	@$(PY) bench/bench_spawn.py
