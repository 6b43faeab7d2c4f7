# qsim: the newcomer's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.qsim-installed
DEMO   := examples/models/demo_cnn_int8.tflite
OUT    := build/demo

.PHONY: install demo test test-fast synth clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[ref,test,hdl]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/qsim inspect $(DEMO)
	$(BIN)/qsim run $(DEMO) --input examples/models/demo_input.npy --top-k 3
	$(BIN)/qsim check $(DEMO) --random 3 --reference both
	$(BIN)/qsim profile $(DEMO) --hw edge16
	$(BIN)/qsim codegen $(DEMO) -o $(OUT) --name demo --force
	$(MAKE) -C $(OUT)

test: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest tests hdl_tests

synth: $(STAMP)
	$(BIN)/python hdl_tests/synth_report.py

clean:
	rm -rf build hdl_tests/sim_build .pytest_cache .hypothesis
