"""The run folder's lifecycle that training, experts, adaptation and merging share: skip a
completed run of the same experiment, refuse to overwrite another, leave a failure record."""
import json

import pytest

from mixbench.engine.rundir import LOCK_NAME, RunFolder, refuse_overwrite
from mixbench.errors import RunExistsError

CONFIG = {"merge": {"name": "ties", "top_k": 0.2}, "device": "cpu"}


def folder(path, config=CONFIG):
    return RunFolder(path, config["merge"], recorded=lambda r: r["config"]["merge"])


def started(config=CONFIG):
    return {"config": config, "status": "running"}


def completed(config=CONFIG, value=1.0):
    return {"config": config, "status": "completed", "merge": {"avg_top1": value}}


def read(path):
    return json.loads((path / "results.json").read_text())


def test_work_writes_its_record_and_a_rerun_skips_it(tmp_path):
    calls = []
    first = folder(tmp_path).run(lambda: calls.append(1) or completed(), started())
    assert first == read(tmp_path) and first["status"] == "completed"
    again = folder(tmp_path).run(lambda: calls.append(2) or completed(value=2.0), started())
    assert calls == [1] and again == first
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("error, status", [(KeyboardInterrupt(), "interrupted"),
                                           (RuntimeError("disk full"), "failed")])
def test_a_failure_leaves_a_record_that_says_what_happened(tmp_path, error, status):
    (tmp_path / "kept.pt").write_bytes(b"written before")

    def work():
        raise error

    with pytest.raises(type(error)):
        folder(tmp_path).run(work, started())
    record = read(tmp_path)
    assert record["status"] == status and record["config"] == CONFIG
    assert record["error"].startswith(type(error).__name__)
    assert (tmp_path / "kept.pt").read_bytes() == b"written before"
    # a failed run is not done: the next one runs, and its record replaces the failure
    assert folder(tmp_path).run(completed, started())["status"] == "completed"


def test_another_experiments_completed_run_is_never_overwritten(tmp_path):
    folder(tmp_path).run(completed, started())
    other = {"merge": {"name": "ties", "top_k": 0.5}, "device": "cpu"}
    with pytest.raises(RunExistsError, match="another experiment.*top_k"):
        folder(tmp_path, other).run(lambda: completed(other), started(other))
    assert read(tmp_path)["config"] == CONFIG


def test_execution_keys_do_not_make_another_experiment(tmp_path):
    config = {"trainer": {"epochs": 2, "progress": True}}
    done = {"config": config, "status": "completed"}
    (tmp_path / "results.json").write_text(json.dumps(done))
    quiet = {"trainer": {"epochs": 2, "progress": False}}
    assert RunFolder(tmp_path, quiet).completed() == done
    assert RunFolder(tmp_path, {"trainer": {"epochs": 3, "progress": True}}).completed() is None


def test_a_started_run_continues_only_when_asked(tmp_path):
    checkpoint = tmp_path / "last.pt"
    refuse_overwrite(checkpoint, resume=False)  # nothing there yet
    checkpoint.write_bytes(b"")
    with pytest.raises(RunExistsError, match="trainer.resume=true"):
        refuse_overwrite(checkpoint, resume=False)
    refuse_overwrite(checkpoint, resume=True)


def test_a_folder_another_job_holds_is_refused(tmp_path):
    with folder(tmp_path).lock():
        with pytest.raises(RunExistsError, match="another job"):
            folder(tmp_path).run(completed, started())
    assert not (tmp_path / "results.json").exists()
