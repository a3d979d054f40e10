# mixbench: `make benchmark` and `make test` are the two commands the README starts with.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Exact torch/torchvision builds we test against; override for another platform,
# e.g. make TORCH_SPEC="torch torchvision --index-url ..." setup
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BENCH_DIR ?= runs/benchmark/$(shell date +%Y-%m-%d_%H-%M-%S)

.PHONY: setup benchmark reproduce merge-demo tta-demo test test-fast lint data clean

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

# The seed papers' claims a CPU can test (experiment=reproduce_cpu: 21 configurations × 3
# seeds on digits and diabetes), the last-layer geometry of its ERM and mixup runs, then the
# table of docs/reproductions.md. Re-running skips the runs already completed.
REPRO_DIR ?= multirun/reproduce_cpu
reproduce: setup
	$(PY) tools/train.py -m experiment=reproduce_cpu hydra.sweep.dir=$(REPRO_DIR) \
		trainer.progress=false
	for run in $(REPRO_DIR)/+reproduce=erm,* $(REPRO_DIR)/+reproduce=mixup,*; do \
		$(PY) tools/analyze.py "$$run" --geometry > /dev/null || exit 1; done
	$(PY) tools/leaderboard.py $(REPRO_DIR) --reproductions benchmarks/reference/claims.yaml

# Model merging on a CPU (docs/merging.md): θ₀ on Fashion-MNIST (2 epochs), four tasks
# fine-tuned from it with ERM and with mixup (1 epoch each, 10k training images a task),
# seeds 0-2, then every merger and the reference rows, then the table.
MERGE_DIR ?= runs/merge_fmnist
MERGE_TASKS ?= fashion_mnist,fashion_mnist_rotated,fashion_mnist_inverted,digits28
merge-demo: setup
	$(PY) tools/train.py -m dataset=fashion_mnist trainer.epochs=2 seed=0,1,2 \
		trainer.progress=false hydra.sweep.dir=$(MERGE_DIR)/base 'hydra.sweep.subdir=seed$${seed}'
	$(PY) tools/train.py -m dataset=$(MERGE_TASKS) +method=erm,mixup seed=0,1,2 \
		trainer.epochs=1 optimizer.lr=0.02 ++dataset.max_train=10000 trainer.progress=false \
		'trainer.init_from=$(MERGE_DIR)/base/seed$${seed}' hydra.sweep.dir=$(MERGE_DIR) \
		'hydra.sweep.subdir=$${method.name}/$${dataset.name}/seed$${seed}'
	$(PY) tools/merge.py -m experiment=merge_fmnist_tasks root=$(MERGE_DIR) finetune=erm,mixup \
		seed=0,1,2 merge=task_arithmetic,ties,dare,pcb
	$(PY) tools/leaderboard.py multirun/merge_fmnist_tasks

# Dataset distillation on a CPU (docs/distillation.md): plain and smooth experts, then MTT,
# the real-subset baselines and each AST student option alone on digits and Fashion-MNIST at
# IPC 1 and 10, seeds 0-2; the tables and the parameter-change figure in $(DISTILL_DIR).
DISTILL_DIR ?= multirun/distill_study
.PHONY: distill-demo
distill-demo: setup
	$(PY) tools/distill_study.py --out $(DISTILL_DIR)

# Metric learning on Fashion-MNIST, classes 0-4 → 5-9 (docs/metric-learning.md): contrastive
# and multi-similarity, each plain and with Metrix in each mode, seeds 0-2 (24 runs).
METRIX_DIR ?= multirun/metrix_fashion_mnist
.PHONY: metrix-demo
metrix-demo: setup
	$(PY) tools/train.py -m experiment=metrix_fashion_mnist loss=contrastive,multi_similarity \
		seed=0,1,2 trainer.progress=false hydra.sweep.dir=$(METRIX_DIR) \
		'hydra.sweep.subdir=erm/$${loss.name}/seed$${seed}'
	$(PY) tools/train.py -m experiment=metrix_fashion_mnist loss=contrastive,multi_similarity \
		+method=metrix method.mode=input,feature,embed seed=0,1,2 trainer.progress=false \
		hydra.sweep.dir=$(METRIX_DIR) \
		'hydra.sweep.subdir=metrix_$${method.mode}/$${loss.name}/seed$${seed}'
	$(PY) tools/leaderboard.py $(METRIX_DIR)

# Test-time adaptation on a CPU (docs/test-time.md): small-CNN sources on Fashion-MNIST trained
# with ERM and with mixup (3 epochs, seeds 0-2), every adapter on five corruptions at severity 3
# and 5 over an i.i.d. and a label-correlated stream, then the tables. Re-running skips what
# is done.
TTA_DIR ?= runs/tta_fmnist
ADAPTERS ?= source,tbn,alpha_bn,ema_bn,tent,unmix_tns,unmix_tns_tent
tta-demo: setup
	$(PY) tools/train.py -m experiment=fashion_mnist_cnn trainer.epochs=3 +method=erm,mixup \
		seed=0,1,2 trainer.progress=false hydra.sweep.dir=$(TTA_DIR) \
		'hydra.sweep.subdir=$${method.name}/seed$${seed}'
	$(PY) tools/adapt.py -m experiment=adapt_fmnist adapter=$(ADAPTERS) stream=iid,dirichlet \
		severity=3,5 source=$$(ls -d $(TTA_DIR)/*/seed* | paste -sd, -)
	$(PY) tools/leaderboard.py multirun/adapt_fmnist

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
	$(PY) -m ruff check mixbench tools tests benchmarks

# Fashion-MNIST's raw files from Debian's package (the dataset=fashion_mnist default root).
data:
	$(if $(shell command -v sudo),sudo,) apt-get update -qq
	$(if $(shell command -v sudo),sudo,) apt-get install -y -qq dataset-fashion-mnist

clean:
	rm -rf runs multirun outputs .pytest_cache
