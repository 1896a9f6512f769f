# snnc: `make run` and `make test` set everything up from nothing, then run.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install run test test-all lint bench clean fuzz interop-lava

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

# Brian2, the peer simulator of benchmarks/brian2_compare.py, in its own venv: brian2 2.9.0 (the newest
# on PyPI) does not import with numpy >= 2.4, which .venv holds (ndarray.ptp; fixed in brian2 #1705, unreleased)
BRIAN2_VENV  := .venv-brian2
BRIAN2_STAMP := $(BRIAN2_VENV)/.installed

$(BRIAN2_STAMP):
	$(PY) -m venv $(BRIAN2_VENV)
	$(BRIAN2_VENV)/bin/python -m pip install -q 'brian2>=2.9,<2.10' 'numpy>=2,<2.4'
	touch $(BRIAN2_STAMP)

bench: $(STAMP) $(BRIAN2_STAMP)  ## every benchmark: tables on stdout, JSON in benchmarks/results/, tables and plots in docs/
	$(VPY) benchmarks/conversion.py
	$(VPY) benchmarks/direct_to_event.py
	$(VPY) benchmarks/event_kernels.py
	$(VPY) benchmarks/loihi_mapping.py
	$(VPY) benchmarks/brian2_compare.py --brian2-python $(BRIAN2_VENV)/bin/python

.PHONY: docs
docs: $(STAMP)  ## the docs site: docs/ -> site/ (mkdocs --strict: any warning, e.g. a broken link, fails)
	$(VENV)/bin/mkdocs build --strict

# fuzz: 100,000 mutated inputs per file reader, every one a clean snnc error.  The nir and model
# readers (~40 and ~15 ms an input) run as two shards each: `make -j2 fuzz` runs them side by side
FUZZ       := $(VPY) tools/fuzz.py --count 100000 --seed 0 --crash-dir fuzz-crashes
FUZZ_PARTS := fuzz-snnir fuzz-sidecar fuzz-nir-0 fuzz-nir-1 fuzz-model-0 fuzz-model-1
.PHONY: $(FUZZ_PARTS)
fuzz: $(FUZZ_PARTS)  ## 100,000 mutated inputs per file reader (about 2 h of one core; make -j2 fuzz): every one a clean snnc error
fuzz-snnir fuzz-sidecar: $(STAMP)
	$(FUZZ) --target $(@:fuzz-%=%)
fuzz-nir-0 fuzz-nir-1 fuzz-model-0 fuzz-model-1: $(STAMP)
	$(FUZZ) --target $(word 2,$(subst -, ,$@)) --shard $(word 3,$(subst -, ,$@))/2

# Lava (lava-nc 0.10 / lava-dl 0.6) needs Python 3.10: its own venv, from pyenv's 3.10 (pulls torch 2.3.1 from PyPI)
PY310      ?= $(lastword $(wildcard $(HOME)/.pyenv/versions/3.10.*/bin/python))
LAVA_VENV  := .venv-lava
LAVA_STAMP := $(LAVA_VENV)/.installed

$(LAVA_STAMP):
	@test -n "$(PY310)" || { echo "interop-lava: no Python 3.10 (pyenv install 3.10, or make PY310=/path/to/python3.10)"; exit 2; }
	$(PY310) -m venv $(LAVA_VENV)
	$(LAVA_VENV)/bin/python -m pip install -q 'lava-nc==0.10.*' 'lava-dl==0.6.*'
	touch $(LAVA_STAMP)

interop-lava: $(STAMP) $(LAVA_STAMP)  ## digits CNN and MLP artifacts run in Lava: predictions, voltages, spikes equal to snnc's (not in make test)
	$(VPY) tools/interop_lava.py --lava-python $(LAVA_VENV)/bin/python --out out-lava

clean:
	rm -rf $(VENV) build *.egg-info
