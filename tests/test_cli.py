"""The command-line tools as a user runs them (subprocesses through Hydra)."""
import json

import pytest
from conftest import run_tool

pytestmark = pytest.mark.slow  # every test here starts Python processes

QUICK = ["trainer.epochs=1", "trainer.progress=false"]


def test_train_default_is_erm_on_digits_in_the_given_run_dir(tmp_path):
    run_dir = tmp_path / "my run"
    out = run_tool("tools/train.py", *QUICK, f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["config"]["method"]["name"] == "erm"
    assert results["config"]["dataset"]["name"] == "digits"


def test_plus_method_appends_and_unknown_method_lists_options(tmp_path):
    out = run_tool("tools/train.py", "+method=cutmix", "method.lam_mode=sample", *QUICK,
                   f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    method = json.loads((tmp_path / "results.json").read_text())["config"]["method"]
    assert method == {"name": "cutmix", "alpha": 0.2, "prob": 1.0, "lam_mode": "sample",
                      "label_lam": "same", "mix_until": 1.0}

    bad = run_tool("tools/train.py", "+method=nosuch", f"hydra.run.dir={tmp_path / 'x'}")
    assert bad.returncode != 0
    assert "Available options in 'method'" in bad.stderr
    assert "cutmix" in bad.stderr and "mixup" in bad.stderr


def test_method_without_plus_points_to_plus(tmp_path):
    out = run_tool("tools/train.py", "method=mixup", f"hydra.run.dir={tmp_path}")
    assert out.returncode != 0 and "+method=mixup" in out.stderr


def test_user_errors_print_a_message_not_a_traceback(tmp_path):
    out = run_tool("tools/train.py", "dataset=cifar10", f"dataset.root={tmp_path}",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 1
    combined = out.stdout + out.stderr
    assert "dataset.download=true" in combined and "Traceback" not in combined


def test_sweep_then_leaderboard_then_evaluate(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_tool("tools/train.py", "-m", "+method=erm,mixup", "seed=0,1", *QUICK,
                   f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr
    runs = sorted(p.parent for p in sweep.rglob("results.json"))
    assert len(runs) == 4

    board = run_tool("tools/leaderboard.py", str(sweep))
    assert board.returncode == 0, board.stderr
    assert "| erm" in board.stdout and "| mixup" in board.stdout
    assert (sweep / "leaderboard.md").exists() and (sweep / "leaderboard.csv").exists()

    evaluated = run_tool("tools/evaluate.py", str(runs[0]))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "top1=" in evaluated.stdout and "[completed]" in evaluated.stdout

    missing = run_tool("tools/evaluate.py", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "no checkpoint" in missing.stderr
