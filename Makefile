# tidings — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
SERVICES_DIR ?= /tmp/tidings-test-services

.PHONY: run test check setup dev-setup services services-stop bench clean

$(BIN)/tidings: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/tidings

## make run: set up, start the service with its embedded defaults, and drive demo traffic.
run: setup
	@TIDINGS_ADMIN_KEY=$${TIDINGS_ADMIN_KEY:-$$(cat .tidings-admin-key 2>/dev/null || (umask 077; head -c 18 /dev/urandom | base64 | tr '+/' '-_' | sed 's/^/tid_/' | tee .tidings-admin-key))}; \
	export TIDINGS_ADMIN_KEY; \
	echo "admin API key: $$TIDINGS_ADMIN_KEY  (also in .tidings-admin-key)"; \
	echo "dashboard:     http://127.0.0.1:$(PORT)/   inbox widget: http://127.0.0.1:$(PORT)/widget"; \
	$(BIN)/tidings serve --port $(PORT) & server=$$!; \
	trap 'kill $$server 2>/dev/null' EXIT INT TERM; \
	for i in $$(seq 1 600); do curl -sf http://127.0.0.1:$(PORT)/readyz >/dev/null && break; sleep 0.1; done; \
	TIDINGS_API_KEY=$$TIDINGS_ADMIN_KEY $(BIN)/tidings demo --url http://127.0.0.1:$(PORT) --rate 20 --duration 30; \
	echo "demo done; the service keeps running at http://127.0.0.1:$(PORT)/ (Ctrl-C to stop)"; \
	wait $$server

## make test: install and start every service the tests need, then run the whole suite.
test: setup
	bash scripts/test.sh

check: setup
	$(BIN)/ruff format --check src tests bench fakes testbed
	$(BIN)/ruff check src tests bench fakes testbed
	$(BIN)/mypy

bench: setup
	$(BIN)/tidings bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tidings.db* .tidings-admin-key
