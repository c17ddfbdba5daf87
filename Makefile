# The two commands a newcomer needs: `make demo` and `make test`. Each sets itself up (virtual environment and
# the package with the extras it needs) on a machine that has only Python >= 3.11 and git.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo test browser-deps lint typecheck bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev,browser]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/integration-status demo --host $(HOST) --port $(PORT)

# The browser tests drive Debian's chromium (never a downloaded browser) and type-check the TypeScript client.
# Outside CI a machine that cannot install them (no root) still runs the rest: those tests skip with a reason.
browser-deps:
	bash scripts/install-browser.sh || { [ "$$CI" != "true" ] && echo "browser tests will be skipped"; }
	[ -d clients/typescript/node_modules ] || (cd clients/typescript && npm ci --no-audit --no-fund --silent) \
		|| { [ "$$CI" != "true" ] && echo "TypeScript client check will be skipped"; }

test: $(VENV)/.installed browser-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check integration_status tests examples bench
	$(BIN)/ruff format --check integration_status tests examples bench

typecheck: $(VENV)/.installed
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist *.egg-info
