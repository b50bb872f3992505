# Everything runs inside .venv, which the first target that needs it creates.
# torch is pinned and installed first, from TORCH_INDEX when given (see README: where pip's index serves
# the CUDA build of torch, TORCH_INDEX=https://download.pytorch.org/whl/cpu takes the CPU wheel instead).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
TORCH_INDEX ?=
EX     ?= 01

.PHONY: install demo test test-slow lessons lessons-quick notebooks bench bench-gpu check clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m toydiff demo --out runs/demo
	$(PY) -m imagediff demo --out runs/demo/images
	$(PY) -m videodiff demo --out runs/demo/video

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# Runs every lesson in order, then prints each one's measured time next to the time its header states.
lessons: $(STAMP)
	$(PY) lessons/run_all.py

lessons-quick: $(STAMP)
	LESSON_QUICK=1 $(PY) lessons/run_all.py

# Writes a Jupyter notebook beside each lesson script; the `# %%` scripts stay the source.
notebooks: $(STAMP)
	$(PY) -m pip install --quiet -e '.[notebooks]'
	$(PY) -m jupytext --to ipynb lessons/[0-9][0-9]_*.py

bench: $(STAMP)
	$(PY) -m toydiff.bench
	$(PY) -m imagediff.bench
	$(PY) -m videodiff.bench
	$(PY) -m videodiff.interp.bench --checkpoint runs/bench/videodiff/dit/checkpoint.pt

# The CUDA paths (placement, bf16 autocast, SDPA's fast kernels, the chain) and the GPU-size models'
# throughput; needs a GPU (docs/gpu.md).
bench-gpu: $(STAMP)
	$(PY) -m videodiff.bench_gpu --compile small base

check: $(STAMP)
	$(PY) -m lessons.exercises.check $(EX) $(FILE)

clean:
	rm -rf runs .pytest_cache
