# cxlnic — the commands a user runs.  The first run of any target builds
# .venv from pyproject.toml; later runs reuse it (rebuilt when pyproject changes).

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BUILD  := build

# make sim options
SCENARIO ?= mixed
PACKETS  ?= 100000
SEED     ?= 1
PCAP     ?=
RULES    ?=
TYPE     ?= 2
BURST    ?= 1024
# pytest-xdist workers for make test
JOBS     ?= auto

.PHONY: all venv sim test regress verilog lint bench synth docs check-docs clean distclean help

all: help

help:
	@echo "make sim      the SmartNIC RTL under Verilator against the golden slow path, with a report"
	@echo "              (SCENARIO= PACKETS= SEED= PCAP= RULES= TYPE= BURST= WAVES=1; docs/system-sim.md)"
	@echo "make test     unit, property and block tests (JUnit XML in build/test-results.xml)"
	@echo "make regress  long-seed regression"
	@echo "make bench    benchmarks -> build/bench/*.json, results.json and docs/performance.md"
	@echo "make synth    ECP5-85 synthesis, place and route of the datapath (Yosys + nextpnr) -> build/synth/report.json"
	@echo "make docs     regenerate docs/table-format.md (and build/table-format.json, build/cxlnic_tables.h)"
	@echo "make verilog  generate Verilog for each RTL block into build/verilog"
	@echo "make lint     ruff, and verilator --lint-only -Wall on the generated Verilog"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	@echo "== installing cxlnic and its dependencies into $(VENV) (first run only) =="
	$(PY) -m pip install --disable-pip-version-check -q -e .
	@touch $(STAMP)

venv: $(STAMP)

sim: $(STAMP)
	$(PY) -m cxlnic.cli sim --scenario $(SCENARIO) --packets $(PACKETS) --seed $(SEED) \
		$(if $(PCAP),--pcap $(PCAP)) $(if $(RULES),--rules $(RULES)) --type $(TYPE) --burst $(BURST) --out $(BUILD)/sim

test: $(STAMP)
	@mkdir -p $(BUILD)
	$(PY) -m pytest -n $(JOBS) --dist loadgroup -m "not slow" --junitxml=$(BUILD)/test-results.xml

regress: $(STAMP)
	@mkdir -p $(BUILD)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -n $(JOBS) --dist loadgroup --junitxml=$(BUILD)/regress-results.xml

bench: $(STAMP)
	$(PY) scripts/bench_model.py --out $(BUILD)/bench
	$(PY) scripts/bench_datapath.py --out $(BUILD)/bench
	$(PY) scripts/bench_cxl.py --out $(BUILD)/bench
	$(PY) scripts/bench_system.py --out $(BUILD)/bench
	$(PY) scripts/perf_report.py --bench $(BUILD)/bench --synth $(BUILD)/synth

synth: $(STAMP)
	$(PY) scripts/synth.py --out $(BUILD)/synth$(if $(BLOCK),-$(BLOCK)) $(if $(BLOCK),--block $(BLOCK))

docs: $(STAMP)
	$(PY) scripts/gen_table_doc.py

verilog: $(STAMP)
	$(PY) -m cxlnic.cli verilog --out $(BUILD)/verilog

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m cxlnic.cli verilog --out $(BUILD)/verilog --lint

clean:
	rm -rf $(BUILD)

distclean: clean
	rm -rf $(VENV) *.egg-info
