# qsim: the newcomer's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.qsim-installed
DEMO   := examples/models/demo_cnn_int8.tflite
OUT    := build/demo
SCALESIM := .venv-scalesim/bin/python

.PHONY: install demo test test-fast synth clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[ref,test,hdl]'
	touch $@

install: $(STAMP)

# SCALE-Sim 3.0.0 (the cycle-count reference for `qsim profile`) crashes with numpy 2.x,
# so it lives in its own environment; tests/test_accel_scalesim.py runs it as a subprocess.
$(SCALESIM):
	$(PYTHON) -m venv .venv-scalesim
	.venv-scalesim/bin/python -m pip install -q scalesim==3.0.0 "numpy<2"

demo: $(STAMP)
	$(BIN)/qsim inspect $(DEMO)
	$(BIN)/qsim run $(DEMO) --input examples/models/demo_input.npy --top-k 3
	$(BIN)/qsim check $(DEMO) --random 3 --reference both
	$(BIN)/qsim profile $(DEMO) --hw edge16
	$(BIN)/qsim codegen $(DEMO) -o $(OUT) --name demo --force --inputs examples/models/demo_input.npy
	$(MAKE) -s -C $(OUT) check
	$(BIN)/qsim eval $(DEMO) --data examples/models/demo_testset.npz
	$(BIN)/qsim compare $(DEMO) examples/models/demo_cnn_float.tflite --data examples/models/demo_testset.npz
	$(BIN)/python examples/python_api.py build/api
	$(BIN)/python examples/firmware_roundtrip.py $(OUT)-roundtrip
	$(BIN)/python examples/common_mistakes.py

test: $(STAMP) $(SCALESIM)
	OPENBLAS_NUM_THREADS=1 QSIM_SCALESIM_VENV=$(CURDIR)/.venv-scalesim $(BIN)/python -m pytest tests hdl_tests

synth: $(STAMP)
	$(BIN)/python hdl_tests/synth_report.py

clean:
	rm -rf build .pytest_cache .hypothesis
