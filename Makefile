# Geopera kernel. `make serve` and `make test` work on a fresh clone with
# Python 3.11 and make; everything else is installed into .venv.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install serve test test-embedded lint breaking generate check-generated bench chaos fuzz clean

$(STAMP): pyproject.toml generated/pyproject.toml clients/python/pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python 3.11 is required (python3.11 or python3 on PATH)" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 required, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./generated -e '.[dev]' -e ./clients/python
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/geopera serve --demo

# The suite under coverage.py (every server and worker it starts too), then the
# line and branch figures; fails below the floor in pyproject.toml. Two pytest-xdist
# workers, a test file each at a time: most of a test's time is spent waiting on the
# processes it starts (a sample ran in 95 s alone, 66 s as two), and CI's budget is tight.
# TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	rm -rf .coverage-data
	$(BIN)/coverage run -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)
	$(BIN)/python scripts/coverage_summary.py

# A fresh clone's `make test` uses the embedded PostgreSQL. CI runs the whole suite once on
# the PostgreSQL service, then this sample (schema, every named query, the catalogue, jobs,
# credits, HTTP, the server process) on the embedded one, to hold that path inside its time.
EMBEDDED_SAMPLE := tests/test_smoke.py tests/test_named_queries.py tests/test_catalog.py \
	tests/test_jobs.py tests/test_credits.py tests/test_rest.py tests/test_server_process.py
test-embedded: $(STAMP)
	env -u GEOPERA_TEST_DATABASE_URL $(BIN)/pytest -q $(EMBEDDED_SAMPLE)

generate: $(STAMP)
	$(BIN)/python scripts/gen_protos.py
	$(BIN)/python scripts/gen_jsonview.py
	$(BIN)/python scripts/gen_contract.py
	@if command -v npm >/dev/null && [ -d clients/typescript/node_modules ]; then \
		cd clients/typescript && npm run --silent generate; \
	else echo "skipping the TypeScript stubs (needs node and 'npm ci' in clients/typescript)"; fi

check-generated: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check
	$(BIN)/python scripts/gen_jsonview.py --check
	$(BIN)/python scripts/gen_contract.py --check

lint: $(STAMP) check-generated
	$(BIN)/ruff check src tests scripts clients $(wildcard bench)
	$(BIN)/ruff format --check src tests scripts clients $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/buf lint
	$(BIN)/buf breaking --against '.git#ref=HEAD'

# Wire/JSON compatibility of the working tree against an older commit.
breaking: $(STAMP)
	$(BIN)/buf breaking --against '.git#ref=$(or $(AGAINST),HEAD)'


# The tile bench's baseline (TiTiler) comes from the `bench` extra.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run

# Kill the server 20 times, workers 10 times and PostgreSQL 5 times while jobs
# and analytics run, then check the invariants (bench/chaos.py); writes the
# "chaos" section of bench/RESULTS.md. `make test` runs a small plan.
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

# At least 10,000 hostile requests per operation (FUZZ_ARGS="--requests N ..."
# to change); counts by status code go to bench/RESULTS.md.
fuzz: $(STAMP)
	$(BIN)/python -m bench.fuzz $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache
