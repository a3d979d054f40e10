"""The mixing benchmark runs end to end and reports what its targets are about (no timings are
checked: speed claims live in docs/benchmarks.md, measured on a known machine)."""
import re
from types import SimpleNamespace

import pytest
from conftest import ROOT, run_tool

from benchmarks.mixing import (OURS, bandwidth, gbps, paired_reference, peak_gbps,
                               print_table, quartiles_of_rounds, traffic_bytes)


def test_paired_reference_is_what_each_target_compares_with():
    assert paired_reference("mixup/sample") == ("torchvision", "mixup/batch")
    assert paired_reference("cutmix/batch") == ("torchvision", "cutmix/batch")
    assert paired_reference("fmix/sample") == ("ours", "mixup/sample")


def test_quartiles_pool_the_turns_of_every_round():
    rounds = [{"fmix/batch": [1.0, 2.0, 3.0]}, {"fmix/batch": [4.0, 5.0]}, {}]
    low, high = quartiles_of_rounds(rounds)["fmix/batch"]
    assert (low, high) == (2.0, 4.0)  # the 25th and 75th percentiles of 1..5


def test_quartiles_of_few_turns_stay_within_the_measured_ratios():
    # Two turns, one far off (a stalled turn): the quartiles interpolate between them, where
    # the "exclusive" method gave (-423.78, 2683.84) for ratios like these on a fresh clone.
    rounds = [{"cutmix/sample": [0.5, 1100.0]}]
    low, high = quartiles_of_rounds(rounds)["cutmix/sample"]
    assert (low, high) == (275.375, 825.125)
    assert quartiles_of_rounds([{"mixup/batch": [0.7]}]) == {}  # one turn has no spread


def test_traffic_is_one_read_and_one_write_of_the_float32_batch():
    assert traffic_bytes(256) == 2 * 256 * 3 * 32 * 32 * 4
    assert gbps(0.5, 10**9) == pytest.approx(2000.0)  # 1 GB in half a millisecond
    assert gbps(None, 10**9) is None


def test_peak_bandwidth_from_device_properties_of_known_cards():
    # What CUDA reports for an H100 SXM (HBM3) and an RTX 4090 (GDDR6X), and their data sheets'
    # 3.35 TB/s and 1008 GB/s
    h100 = SimpleNamespace(memory_clock_rate=2_619_000, memory_bus_width=5120)
    rtx4090 = SimpleNamespace(memory_clock_rate=10_501_000, memory_bus_width=384)
    assert peak_gbps(h100) == pytest.approx(3352.3, abs=0.1)
    assert peak_gbps(rtx4090) == pytest.approx(1008.1, abs=0.1)


def test_bandwidth_cell_shows_the_share_of_peak_only_where_there_is_one():
    assert bandwidth(0.5, 10**9, None) == "2000.0"
    assert bandwidth(0.5, 10**9, 4000.0) == "2000.0 (50% of peak)"
    assert bandwidth(None, 10**9, 4000.0) == "—"


def test_table_rows_carry_the_bandwidth_of_ours_and_the_references(capsys):
    ours = {f"{name}/{mode}": 1.0 for name in OURS for mode in ("batch", "sample")}
    tv = {"mixup/batch": 2.0, "cutmix/batch": 2.0}
    print_table("cuda", ours, {}, tv, {}, nbytes=10**9, peak=4000.0)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert lines[0].split("|")[-2].strip() == "GB/s"
    assert lines[1].split("|")[-2].strip() == "1000.0 (25% of peak)"  # mixup/batch
    assert "| torchvision v2 mixup | batch | 2.000 | 500.0 (12% of peak) |" in lines


@pytest.mark.slow
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
            float(cells[7])  # GB/s, a number (no peak on the CPU)
    assert "warning" not in out.stderr
