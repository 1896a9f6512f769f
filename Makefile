# snnc: `make run` and `make test` set everything up from nothing, then run.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install run test test-all lint bench clean fuzz

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch first, the versions that lie on this machine's disk (torchvision imports beside them)
	$(VPY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(VPY) -m pip install -q -e '.[dev,snn,tvm,loihi,nir,onnx,examples]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VPY) examples/digits/run.py

test: $(STAMP)
	$(VPY) -m pytest -n 2

test-all: $(STAMP)
	$(VPY) -m pytest -n 2 -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check snnc tests benchmarks examples
	$(VENV)/bin/mypy

bench: $(STAMP)  ## every benchmark: tables on stdout, JSON in benchmarks/results/, tables and plots in docs/
	$(VPY) benchmarks/conversion.py
	$(VPY) benchmarks/direct_to_event.py
	$(VPY) benchmarks/event_kernels.py
	$(VPY) benchmarks/loihi_mapping.py

fuzz: $(STAMP)  ## 100,000 mutated inputs per file reader (about 2.5 h on 2 cores): every one must be a clean snnc error
	$(VPY) tools/fuzz.py --target snnir --count 100000 --seed 0 --crash-dir fuzz-crashes
	$(VPY) tools/fuzz.py --target sidecar --count 100000 --seed 0 --crash-dir fuzz-crashes
	$(VPY) tools/fuzz.py --target nir --count 100000 --seed 0 --crash-dir fuzz-crashes
	$(VPY) tools/fuzz.py --target model --count 100000 --seed 0 --crash-dir fuzz-crashes

clean:
	rm -rf $(VENV) build *.egg-info
