# Two commands on a fresh machine: `make run` (quick suite) and `make test`. Both set up .venv when needed.
# STACK=spark4 does the same with the Spark 4 stack in .venv-spark4 (docs/DESIGN.md, "The Spark 4 stack").
STACK  ?=
VENV   := $(if $(filter spark4,$(STACK)),.venv-spark4,.venv)
PY     := $(VENV)/bin/python
RESULTS ?= results

.PHONY: setup run test asv gate-validation gpu-check clean-venv

setup:
	@STACK=$(STACK) bash scripts/setup.sh

run: setup
	$(VENV)/bin/harness run quick --results $(RESULTS)

test: setup
	$(PY) -m pytest -q -ra

# asv over this commit (ASV_BENCH narrows it, e.g. ASV_BENCH=calibration), then the HTML site in .asv/html
ASV_BENCH ?= .
asv: setup
	$(VENV)/bin/asv machine --yes >/dev/null
	$(VENV)/bin/asv run --python=same --set-commit-hash $$(git rev-parse HEAD) --bench '$(ASV_BENCH)'; \
	  status=$$?; $(VENV)/bin/asv publish && echo "asv site: .asv/html/index.html (browse: $(VENV)/bin/asv preview)"; \
	  exit $$status

# the paired regression gate (harness ab) against ground truth: false alarms (A/A) and detections (+15%)
gate-validation: setup
	$(PY) scripts/gate-validation.py --case spin --pin-cpu 0 --trials 40 --out $(RESULTS)/gate-validation-spin.json
	$(PY) scripts/gate-validation.py --case spark_spin --trials 40 --out $(RESULTS)/gate-validation-spark.json

# GPU rows of the scaling experiment end to end (needs an NVIDIA GPU; builds Horovod with NCCL)
gpu-check: setup
	bash scripts/gpu-check.sh

clean-venv:
	rm -rf $(VENV)
