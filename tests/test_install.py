"""mixbench as an installed tool: the wheel holds the package and its configs, and its
console scripts train and tabulate from an empty folder, away from any checkout."""
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

SKIP = shutil.ignore_patterns(".venv", ".git", "runs", "multirun", "outputs", "build", "dist",
                              "*.egg-info", "__pycache__", ".pytest_cache", "site")
SCRIPTS = ["mixbench-train", "mixbench-evaluate", "mixbench-leaderboard", "mixbench-adapt",
           "mixbench-merge"]


def run(*args, cwd):
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the checkout (the checkout itself stays untouched)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
        "-w", base / "dist", source, cwd=base)
    (found,) = (base / "dist").glob("mixbench-*.whl")
    return found


def test_the_wheel_holds_the_configs_the_license_and_the_scripts(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "mixbench/configs/train.yaml" in names
    assert "mixbench/configs/method/mixup.yaml" in names
    assert "mixbench/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert all(f"{script} = mixbench.app." in entry_points for script in SCRIPTS)


@pytest.mark.slow
def test_the_installed_commands_train_and_tabulate_from_an_empty_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # reuse this environment's torch and the other dependencies (a path, not a site dir: its
    # .pth files, such as this checkout's editable install, are not read)
    fresh_site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                        "['purelib'])", cwd=tmp_path).stdout.strip())
    (fresh_site / "reuse.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel,
        cwd=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    where = run(python, "-c", "import mixbench; print(mixbench.__file__)", cwd=empty).stdout
    assert where.startswith(str(fresh_site))  # the wheel's copy, not the checkout
    run(venv / "bin" / "mixbench-train", "trainer.epochs=1", "trainer.progress=false",
        "hydra.run.dir=out", cwd=empty)
    assert (empty / "out" / "results.json").is_file()
    board = run(venv / "bin" / "mixbench-leaderboard", "out", "--out", "site", cwd=empty)
    assert "digits" in board.stdout and (empty / "site" / "leaderboard.md").is_file()
