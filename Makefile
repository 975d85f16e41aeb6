# Two commands on a fresh machine: `make run` (quick suite) and `make test`. Both set up .venv when needed.
VENV   := .venv
PY     := $(VENV)/bin/python
RESULTS ?= results

.PHONY: setup run test asv clean-venv

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/harness run quick --results $(RESULTS)

test: setup
	$(PY) -m pytest -q -ra

clean-venv:
	rm -rf $(VENV)
