"""End-to-end runs on digits through the composed config: schema, determinism, resume, and
the failures a user can cause (each with a clear error that keeps what was written)."""
import json

import pytest
import torch

from mixbench.engine.load import evaluate_run
from mixbench.app.train import train
from mixbench.errors import CheckpointError, ConfigError, NonFiniteLossError, RunExistsError
from mixbench.losses import CrossEntropy

from conftest import kill_in_epoch_two, without_timings

METRICS = {"top1", "top5", "nll", "brier", "ece", "aece", "mce", "cwece"}


def read(run_dir):
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize("method", [None, "mixup", "cutmix"])
def test_one_epoch_writes_complete_results(cfg_factory, tmp_path, method):
    cfg = cfg_factory(*([f"+method={method}"] if method else []))
    train(cfg, tmp_path)
    results = read(tmp_path)
    assert results["status"] == "completed" and results["task"] == "classification"
    assert results["config"]["method"]["name"] == (method or "erm")
    for split in ("test", "test_ts", "val"):
        assert set(results[split]) == METRICS
        assert all(0.0 <= results[split][k] <= 1.0 for k in METRICS - {"nll", "brier"})
    assert results["temperature"] > 0
    assert sum(results["reliability"]["count"]) == 360 == sum(results["reliability_ts"]["count"])
    assert len(results["reliability"]["bins"]) == 16
    assert [r["epoch"] for r in results["history"]] == [1]
    assert "test_top1" in results["history"][0]
    assert set(results["timings"]) == {"train_s", "eval_s", "samples_per_s", "processes"}
    assert results["seed"] == 0 and results["git_sha"]
    assert (tmp_path / "reliability.png").stat().st_size > 10_000
    assert (tmp_path / "last.pt").exists()


def test_same_seed_same_metrics_other_seed_differs(cfg_factory, tmp_path):
    runs = [train(cfg_factory("+method=mixup", f"seed={s}"), tmp_path / f"r{i}")
            for i, s in enumerate([3, 3, 4])]
    assert runs[0]["test"] == runs[1]["test"] and runs[0]["history"][0]["train_loss"] == \
        runs[1]["history"][0]["train_loss"]
    assert runs[0]["history"][0]["train_loss"] != runs[2]["history"][0]["train_loss"]


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(cfg_factory, tmp_path, monkeypatch):
    overrides = ("+method=cutmix", "trainer.epochs=3", "seed=5")
    full = train(cfg_factory(*overrides), tmp_path / "full")
    kill_in_epoch_two(cfg_factory(*overrides), tmp_path / "killed", monkeypatch)
    assert read(tmp_path / "killed")["status"] == "interrupted"

    resumed = train(cfg_factory(*overrides, "trainer.resume=true"), tmp_path / "killed")
    assert resumed["test"] == full["test"] and resumed["temperature"] == full["temperature"]
    assert without_timings(resumed["history"]) == without_timings(full["history"])


def test_existing_run_is_not_overwritten(cfg_factory, tmp_path):
    first = train(cfg_factory(), tmp_path)
    before = (tmp_path / "results.json").read_text()
    with pytest.raises(RunExistsError, match="trainer.resume=true"):
        train(cfg_factory("trainer.skip_completed=false"), tmp_path)
    assert (tmp_path / "results.json").read_text() == before
    # the default: a completed run is skipped, its results returned as they are
    again = train(cfg_factory(), tmp_path)
    assert again["test"] == first["test"] and (tmp_path / "results.json").read_text() == before


def test_a_second_job_in_the_same_folder_is_refused_while_the_first_runs(cfg_factory,
                                                                          tmp_path):
    from mixbench.engine.rundir import LOCK_NAME, RunLock

    with RunLock(tmp_path):  # stands for a job still training here
        with pytest.raises(RunExistsError, match="another job"):
            train(cfg_factory(), tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()
    # a lock left by a process that died is taken over
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": __import__("socket").gethostname(),
                                                   "pid": 2**22 + 12345}))
    assert train(cfg_factory(), tmp_path)["status"] == "completed"
    assert not (tmp_path / LOCK_NAME).exists()


def test_resume_with_another_config_is_refused(cfg_factory, tmp_path):
    train(cfg_factory(), tmp_path)
    with pytest.raises(CheckpointError, match="method.name"):
        train(cfg_factory("+method=mixup", "trainer.resume=true"), tmp_path)


def test_corrupt_checkpoint_is_reported_and_kept(cfg_factory, tmp_path):
    (tmp_path / "last.pt").write_bytes(b"\x80\x02 this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        train(cfg_factory("trainer.resume=true"), tmp_path)
    assert (tmp_path / "last.pt").read_bytes().startswith(b"\x80\x02 this")


def test_mismatched_checkpoint_is_reported(cfg_factory, tmp_path):
    train(cfg_factory(), tmp_path)
    with pytest.raises(CheckpointError):
        train(cfg_factory("backbone.width=8", "trainer.resume=true"), tmp_path)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cfg_factory, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_forward = CrossEntropy.forward

    def nan_in_epoch_two(self, logits, target):
        calls["n"] += 1
        loss = real_forward(self, logits, target)
        return loss * float("nan") if calls["n"] > 19 else loss  # 19 steps per epoch

    monkeypatch.setattr(CrossEntropy, "forward", nan_in_epoch_two)
    with pytest.raises(NonFiniteLossError, match="epoch 1") as err:
        train(cfg_factory("trainer.epochs=3"), tmp_path)
    assert "at epoch 2" in str(err.value) and "optimizer.lr" in str(err.value)
    results = read(tmp_path)
    assert results["status"] == "failed" and "NonFiniteLossError" in results["error"]
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values()
                                       if v.is_floating_point())


@pytest.mark.parametrize("override,key", [("trainer.epochs=-1", "trainer.epochs"),
                                          ("trainer.batch_size=0", "trainer.batch_size"),
                                          ("optimizer.lr=-0.1", "optimizer.lr"),
                                          ("trainer.precision=fp8", "trainer.precision"),
                                          ("+method=mixup method.alpha=0", "method.alpha"),
                                          ("+method=cutmix method.prob=2", "method.prob"),
                                          ("scheduler.warmup_epochs=5", "scheduler.warmup_epochs")])
def test_invalid_values_rejected_at_startup(cfg_factory, tmp_path, override, key):
    with pytest.raises(ConfigError, match=key):
        train(cfg_factory(*override.split()), tmp_path)
    assert not (tmp_path / "last.pt").exists()


def test_csv_logger_and_eval_every(cfg_factory, tmp_path):
    train(cfg_factory("logger=csv", "trainer.epochs=3", "trainer.eval_every=2"), tmp_path)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(lines) == 4 and "train_loss" in lines[0]
    tops = [("test_top1" in r) for r in read(tmp_path)["history"]]
    assert tops == [False, True, True]  # every 2 epochs, and always the last


def test_wandb_offline_needs_no_login(cfg_factory, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    train(cfg_factory("logger=wandb"), tmp_path)
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_evaluate_run_reproduces_results(cfg_factory, tmp_path):
    original = train(cfg_factory("+method=mixup"), tmp_path)
    (tmp_path / "results.json").unlink()  # even with results.json gone
    again = evaluate_run(tmp_path, device="cpu")
    assert again["test"] == pytest.approx(original["test"])
    assert again["status"] == "completed" and again["history"] == original["history"]
    # the same record as training writes (built in one place): same keys, same timings keys
    assert set(again) == set(original) and again["protocol"] == "standard"
    assert set(again["timings"]) == set(original["timings"]) and \
        again["timings"]["processes"] == 1


def test_bf16_autocast_and_channels_last_on_cpu(cfg_factory, tmp_path):
    results = train(cfg_factory("+method=mixup", "trainer.precision=bf16",
                                "trainer.channels_last=true"), tmp_path)
    assert results["status"] == "completed" and results["test"]["top1"] > 0.3


def test_fp16_on_cpu_is_refused(cfg_factory, tmp_path):
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        train(cfg_factory("trainer.precision=fp16", "trainer.device=cpu"), tmp_path)
