# The README's two set-up commands are `make run` and `make test`; each creates .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test demo lint format typecheck bench bench-soak bench-profile clean test-openclaw e2e-openclaw

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/omni up

demo: $(STAMP)
	$(BIN)/omni demo

test: $(STAMP) lint
	$(BIN)/python -m pytest --cov --cov-report=term-missing:skip-covered -q

lint: $(STAMP) typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# mypy cannot follow setuptools' package-dir mapping (actors/, bus/, providers/ -> omnillm.*),
# so it checks a tree of links laid out as the installed package is.
typecheck: $(STAMP)
	@rm -rf .typecheck && mkdir -p .typecheck/omnillm
	@for f in omnillm/*; do ln -s ../../$$f .typecheck/omnillm/; done
	@for d in actors bus providers; do ln -s ../../$$d .typecheck/omnillm/$$d; done
	@ln -s ../tests .typecheck/tests && ln -s ../bench .typecheck/bench && ln -s ../eval .typecheck/eval
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml -p omnillm -p tests -p bench -p eval

# The OpenClaw plugin's own tests (Node.js and npm; kept out of `make test`).
test-openclaw:
	cd integrations/openclaw && npm install --no-audit --no-fund && npm test

# A real OpenClaw (from npm, run on Node 24 from npm) for one turn through `omni up` and the
# mock provider; needs npm and the registry, downloads about 800 MB (kept out of `make test`).
e2e-openclaw: $(STAMP)
	integrations/openclaw/e2e.sh

# Benchmarks, not part of `make test` (bench/README.md): OmniLLM over NATS and over its gateway
# against the mock called directly, a bare pass-through proxy and LiteLLM's proxy, interleaved.
# Options go in BENCH_ARGS, e.g. BENCH_ARGS='--no-litellm --json bench/results/run.json'.
bench: $(STAMP)
	$(BIN)/python -m bench.driver $(BENCH_ARGS)

bench-soak: $(STAMP)
	$(BIN)/python -m bench.soak $(BENCH_ARGS)

bench-profile: $(STAMP)
	$(BIN)/python -m bench.profile $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .typecheck .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
