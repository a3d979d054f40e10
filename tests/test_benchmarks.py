"""The mixing benchmark runs end to end and reports what its targets are about (no timings are
checked: speed claims live in docs/benchmarks.md, measured on a known machine)."""
import re

from conftest import ROOT, run_tool

from benchmarks.mixing import OURS, paired_reference, quartiles_of_rounds


def test_paired_reference_is_what_each_target_compares_with():
    assert paired_reference("mixup/sample") == ("torchvision", "mixup/batch")
    assert paired_reference("cutmix/batch") == ("torchvision", "cutmix/batch")
    assert paired_reference("fmix/sample") == ("ours", "mixup/sample")


def test_quartiles_pool_the_turns_of_every_round():
    rounds = [{"fmix/batch": [1.0, 2.0, 3.0]}, {"fmix/batch": [4.0, 5.0]}, {}]
    low, high = quartiles_of_rounds(rounds)["fmix/batch"]
    assert (low, high) == (1.5, 4.5)  # statistics.quantiles of 1..5 ("exclusive" method)


def test_interleaved_run_prints_every_mixer_with_its_paired_quartiles():
    out = run_tool(str(ROOT / "benchmarks/mixing.py"), "--no-cuda", "--batch", "8",
                   "--classes", "5", "--min-time", "0.02", "--interleave", "2")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]): line
            for line in out.stdout.splitlines() if line.startswith("| ")}
    quartiles = re.compile(r"\d\.\d\d× \(\d+\.\d\d–\d+\.\d\d\)")
    for name in OURS:
        for mode in ("batch", "sample"):
            cells = rows[(name, mode)].split("|")
            # the quartiles stand next to the ratio the target is about
            target_cell = cells[4] if name in ("mixup", "cutmix") else cells[6]
            assert quartiles.search(target_cell), rows[(name, mode)]
    assert "warning" not in out.stderr
