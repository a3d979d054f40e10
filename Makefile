# mixbench: `make benchmark` and `make test` are the two commands the README starts with.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Exact torch/torchvision builds we test against; override for another platform,
# e.g. make TORCH_SPEC="torch torchvision --index-url ..." setup
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BENCH_DIR ?= runs/benchmark/$(shell date +%Y-%m-%d_%H-%M-%S)

.PHONY: setup benchmark reproduce test test-fast lint data clean

setup: $(VENV)/.installed

# Re-installs when pyproject.toml changes; pip skips what is already there.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# ERM, mixup and cutmix on the bundled digits, 2 seeds each, then the leaderboard.
benchmark: setup
	$(PY) tools/train.py -m +method=erm,mixup,cutmix seed=0,1 \
		hydra.sweep.dir=$(BENCH_DIR) trainer.progress=false
	$(PY) tools/leaderboard.py $(BENCH_DIR)

# The seed papers' claims a CPU can test (experiment=reproduce_cpu: 19 configurations × 3
# seeds on digits and diabetes), the last-layer geometry of its ERM and mixup runs, then the
# table of docs/reproductions.md. Re-running skips the runs already completed.
REPRO_DIR ?= multirun/reproduce_cpu
reproduce: setup
	$(PY) tools/train.py -m experiment=reproduce_cpu hydra.sweep.dir=$(REPRO_DIR) \
		trainer.progress=false
	for run in $(REPRO_DIR)/+reproduce=erm,* $(REPRO_DIR)/+reproduce=mixup,*; do \
		$(PY) tools/analyze.py "$$run" --geometry > /dev/null || exit 1; done
	$(PY) tools/leaderboard.py $(REPRO_DIR) --reproductions benchmarks/reference/claims.yaml

# The whole test suite. pytest exits 5 when it collected no tests: that is a failure here.
test: setup
	$(PY) -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; \
	exit $$status

# The edit loop: everything but the tests marked slow (subprocesses, DDP, kill-and-resume).
test-fast: setup
	$(PY) -m pytest -q -m "not slow"; status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; \
	exit $$status

lint: setup
	$(PY) -m pip install --quiet ruff
	$(PY) -m ruff check mixbench tools tests benchmarks

# Fashion-MNIST's raw files from Debian's package (the dataset=fashion_mnist default root).
data:
	$(if $(shell command -v sudo),sudo,) apt-get update -qq
	$(if $(shell command -v sudo),sudo,) apt-get install -y -qq dataset-fashion-mnist

clean:
	rm -rf runs multirun outputs .pytest_cache
