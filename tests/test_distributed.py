"""Several processes on the CPU (gloo): the same model as one process, one results.json, the
same evaluation, and failures that stop the whole job with a clear message. Also sweeps:
every job lands its own completed results, and a re-run skips them."""
import json
import os
import subprocess
import sys

import pytest
import torch

from mixbench.config import CONFIG_DIR
from mixbench.engine.distributed import DistInfo, shard_range
from mixbench.engine.load import evaluate_run
from mixbench.app.train import run
from mixbench.errors import DistributedError

from conftest import ROOT, run_tool

# GroupNorm and no augmentation on digits: nothing depends on how the global batch is split,
# so two processes must train the same model as one. (At the default lr 0.1 with momentum 0.9
# training is chaotic enough that the last-bit differences of summing gradients in another
# order grow to 1e-4 within two epochs; at 0.01 they stay at float precision.)
SPLIT_INVARIANT = ("backbone.norm=group", "optimizer.lr=0.01", "trainer.epochs=2",
                   "trainer.batch_size=64", "seed=3")


def read(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_shard_range_covers_every_row_once():
    for n in (0, 1, 7, 360):
        for world in (1, 2, 3):
            ranges = [shard_range(n, DistInfo(r, world, r)) for r in range(world)]
            rows = [i for start, stop in ranges for i in range(start, stop)]
            assert rows == list(range(n))


@pytest.fixture(scope="module")
def two_and_one_process_runs(tmp_path_factory):
    """The same ERM run on digits with 1 and with 2 processes (module-scoped: ~30 s)."""
    from conftest import make_cfg

    base = tmp_path_factory.mktemp("ddp")
    runs = {}
    for devices in (1, 2):
        cfg = make_cfg("trainer.progress=false", *SPLIT_INVARIANT,
                       f"trainer.devices={devices}")
        runs[devices] = (run(cfg, base / f"p{devices}"), base / f"p{devices}")
    return runs


@pytest.mark.slow
def test_two_processes_train_the_same_model_as_one(two_and_one_process_runs):
    (one, _), (two, two_dir) = two_and_one_process_runs[1], two_and_one_process_runs[2]
    assert two["status"] == "completed" and two["timings"]["processes"] == 2
    assert one["timings"]["processes"] == 1
    for a, b in zip(one["history"], two["history"]):
        assert b["samples"] == a["samples"]  # the global batches, not one per process
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
        assert b["test_top1"] == a["test_top1"]
    for key in ("top1", "nll", "ece", "brier"):
        assert two["test"][key] == pytest.approx(one["test"][key], rel=1e-5, abs=1e-7)
    assert two["temperature"] == pytest.approx(one["temperature"], rel=1e-5)
    # rank 0 alone wrote: one results file, one checkpoint, no leftovers of other ranks
    assert sorted(p.name for p in two_dir.iterdir()) == ["last.pt", "reliability.png",
                                                         "results.json", "train.log"]


@pytest.mark.slow
def test_distributed_evaluation_equals_single_process(two_and_one_process_runs):
    results, run_dir = two_and_one_process_runs[2]
    gathered = {k: results[k] for k in ("test", "test_ts", "val", "temperature")}
    single = evaluate_run(run_dir, "cpu")  # one process, same checkpoint
    for split in ("test", "test_ts", "val"):
        assert sum(single["reliability"]["count"]) == sum(results["reliability"]["count"])
        for key, value in gathered[split].items():
            assert single[split][key] == pytest.approx(value, rel=1e-6, abs=1e-7), (split, key)
    assert single["temperature"] == pytest.approx(gathered["temperature"], rel=1e-6)


@pytest.mark.slow
def test_a_failing_process_stops_the_job_with_a_clear_error(tmp_path):
    from conftest import make_cfg

    cfg = make_cfg("trainer.progress=false", "trainer.devices=2", "dataset=cifar10",
                   f"dataset.root={tmp_path / 'nothing-here'}")
    with pytest.raises(DistributedError, match=r"process \d of 2 failed: .*CIFAR"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "run.lock").exists()


@pytest.mark.slow
def test_torchrun_ranks_share_one_run_folder(tmp_path):
    """torchrun starts the ranks; each has its own Hydra but all write into rank 0's folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "tools/train.py", "backbone.norm=group", "trainer.epochs=1", "trainer.progress=false",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read(run_dir)
    assert results["status"] == "completed" and results["timings"]["processes"] == 2


@pytest.mark.slow
def test_sweep_lands_every_job_and_a_rerun_skips_them(tmp_path):
    sweep = ["-m", "+method=erm,mixup", "seed=0,1", "trainer.epochs=1",
             "trainer.progress=false", f"hydra.sweep.dir={tmp_path}"]
    first = run_tool("tools/train.py", *sweep)
    assert first.returncode == 0, first.stderr[-3000:]
    results = sorted(tmp_path.rglob("results.json"))
    assert len(results) == 4
    assert {read(p.parent)["status"] for p in results} == {"completed"}
    assert len({(read(p.parent)["config"]["method"]["name"], read(p.parent)["seed"])
                for p in results}) == 4
    written = {p: p.stat().st_mtime_ns for p in results}

    again = run_tool("tools/train.py", *sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("already completed: skipping it") == 4
    assert {p: p.stat().st_mtime_ns for p in results} == written


def test_global_batch_must_split_over_processes(cfg_factory, tmp_path):
    from mixbench.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.devices=3"):
        run(cfg_factory("trainer.devices=3", "trainer.batch_size=64"), tmp_path)


def test_sync_bn_on_cpu_is_refused(cfg_factory, tmp_path):
    from mixbench.errors import ConfigError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: SyncBatchNorm is allowed")
    with pytest.raises(ConfigError, match="sync_bn"):
        run(cfg_factory("trainer.devices=2", "trainer.sync_bn=true", "trainer.device=cpu"),
            tmp_path)


def test_dataset_splits_are_sharded_without_overlap():
    """Image-folder style splits (a torch Dataset): training ranks draw disjoint samples that
    depend on the run's seed and the epoch; evaluation ranks take contiguous shares."""
    from torch.utils.data import TensorDataset

    from mixbench.data import DataBundle, make_loader

    rows = TensorDataset(torch.arange(40).float().view(40, 1), torch.arange(40))
    bundle = DataBundle(train=rows, val=rows, test=rows, num_classes=40, in_channels=1,
                        image_size=None)

    def train_rows(rank, seed, epoch=0):
        loader = make_loader(bundle, "train", 8, train=True, device="cpu", seed=seed,
                             shard=DistInfo(rank, 2, rank))
        loader.sampler.set_epoch(epoch)
        assert loader.batch_size == 4  # the global batch of 8, split over 2 processes
        return [int(i) for _, y in loader for i in y]

    ranks = [train_rows(0, seed=1), train_rows(1, seed=1)]
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) == len(ranks[1]) == 20
    assert train_rows(0, seed=2) != ranks[0] and train_rows(0, seed=1, epoch=1) != ranks[0]
    evaluated = [[int(i) for _, y in make_loader(bundle, "test", 8, train=False, device="cpu",
                                                 shard=DistInfo(r, 2, r)) for i in y]
                 for r in range(2)]
    assert evaluated == [list(range(20)), list(range(20, 40))]


@pytest.mark.slow
def test_submitit_tasks_are_the_ranks_of_one_run(tmp_path):
    """Hydra's submitit launcher with 2 tasks for one job (what hydra/launcher=slurm does with
    one task per GPU): the tasks become 2 DDP ranks of a single run."""
    out = run_tool("tools/train.py", "-m", "hydra/launcher=submitit_local",
                   "hydra.launcher.tasks_per_node=2", "backbone.norm=group", "trainer.epochs=1",
                   "trainer.progress=false", f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    [results] = list(tmp_path.rglob("results.json"))
    assert read(results.parent)["status"] == "completed"
    assert read(results.parent)["timings"]["processes"] == 2


def test_slurm_launcher_preset_asks_one_task_per_gpu():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer.devices=4"],
                      return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert cfg.hydra.launcher.tasks_per_node == 4 == cfg.hydra.launcher.gpus_per_node


# Methods that cannot run in the CIFAR-100 ResNet-18 table as they are: a regression method,
# methods that need a checkpoint or another backbone, a method of continual protocols, and
# the overlap study's d-Mixup (experiment=ts_limits).
NOT_IN_OPENMIXUP_TABLE = {"cmixup", "attentivemix", "mixkd", "transmix", "dualmix", "dmixup",
                          "metrix"}  # metrix: pair losses (protocol=retrieval), not classifiers


def test_openmixup_sweep_preset_covers_every_classification_method():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=cifar100_r18_openmixup_sweep"],
                      return_hydra_config=True)
        policies = compose("train", overrides=["experiment=cifar100_r18_openmixup_policies"],
                           return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    swept = set(params["+method"].split(","))
    # the learned policies have their own preset on the same protocol
    swept_policies = set(policies.hydra.sweeper.params["+method"].split(","))
    shipped = {p.stem for p in (CONFIG_DIR / "method").glob("*.yaml")}
    assert swept | swept_policies == shipped - NOT_IN_OPENMIXUP_TABLE
    assert not swept & swept_policies
    assert params["seed"] == "0,1,2" == policies.hydra.sweeper.params["seed"]
    assert OmegaConf.to_container(policies.optimizer) == OmegaConf.to_container(cfg.optimizer)
    assert policies.trainer.epochs == cfg.trainer.epochs
    assert (cfg.dataset.name, cfg.backbone.name, cfg.trainer.epochs, cfg.trainer.batch_size,
            cfg.optimizer.lr, cfg.optimizer.weight_decay) == ("cifar100", "resnet18", 200,
                                                                100, 0.1, 1e-4)
