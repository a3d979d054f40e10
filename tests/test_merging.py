"""Model merging on small hand-computed state dicts: what each merger keeps, that the order of
the tasks does not matter, determinism, global versus per-tensor thresholds, and the errors
that name the keys of incompatible models."""
import pytest
import torch

from mixbench.errors import ConfigError
from mixbench.merging import (check_compatible, dare, pcb_merging, pcb_scores,
                              task_arithmetic, ties_merging)


def models(base: dict, deltas: list[dict]) -> list[dict]:
    """Fine-tuned state dicts θ_i = θ₀ + τ_i (keys of base absent from a delta are copied)."""
    return [{name: base[name] + delta[name] if name in delta else base[name].clone()
             for name in base} for delta in deltas]


def random_models(tasks: int, seed: int = 0, sizes=((30, 20), (400,))):
    """A base with two weight tensors and an integer buffer, and ``tasks`` fine-tuned copies
    with small task vectors."""
    gen = torch.Generator().manual_seed(seed)
    base = {f"w{k}": torch.randn(shape, generator=gen) for k, shape in enumerate(sizes)}
    base["bn.num_batches_tracked"] = torch.tensor(7)
    deltas = [{name: 0.01 * torch.randn(base[name].shape, generator=gen)
               for name in base if base[name].is_floating_point()} for _ in range(tasks)]
    fts = models(base, deltas)
    for index, model in enumerate(fts):
        model["bn.num_batches_tracked"] = torch.tensor(100 + index)
    return base, fts


def delta(merged: dict, base: dict, name: str) -> torch.Tensor:
    return merged[name] - base[name]


MERGERS = {
    "task_arithmetic": lambda b, f: task_arithmetic(b, f, scale=0.3),
    "ties_mean": lambda b, f: ties_merging(b, f, top_k=0.2),
    "ties_sum": lambda b, f: ties_merging(b, f, top_k=0.2, merge="sum"),
    "ties_per_tensor": lambda b, f: ties_merging(b, f, thresholds="per_tensor"),
    "dare_ta": lambda b, f: dare(b, f, p=0.5, seed=3),
    "dare_ties": lambda b, f: dare(b, f, p=0.5, then="ties", seed=3),
    "pcb_official": lambda b, f: pcb_merging(b, f, ratio=0.1, scale=1.2, clip=0.01),
    "pcb_paper": lambda b, f: pcb_merging(b, f, ratio=0.1, form="paper"),
    "pcb_per_tensor": lambda b, f: pcb_merging(b, f, thresholds="per_tensor"),
}
# DARE draws its masks by the task's position, so another order draws other masks
ORDER_FREE = [name for name in MERGERS if not name.startswith("dare")]


# ---- PCB ----------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["official", "paper"])
def test_pcb_keeps_exactly_ratio_of_each_tasks_entries(form):
    base, fts = random_models(3, sizes=((600,), (20, 20)))  # D = 1000 floats per task
    for task_scores in pcb_scores(base, fts, ratio=0.1, form=form):
        assert "bn.num_batches_tracked" not in task_scores
        kept = sum(int((s > 0).sum()) for s in task_scores.values())
        assert kept == 100
        if form == "official":  # min-max over the kept: in (0, 1], the best one at 1
            values = torch.cat([s.flatten() for s in task_scores.values()])
            assert values.max() == 1 and values.min() == 0
    for task_scores in pcb_scores(base, fts, ratio=0.1, form=form, thresholds="per_tensor"):
        assert [int((s > 0).sum()) for s in task_scores.values()] == [60, 40]


def test_pcb_of_one_model_is_its_pruned_clipped_rescaled_task_vector():
    base = {"w": torch.ones(10)}
    tau = torch.tensor([0.9, -0.1, 0.5, -0.7, 0.2, 0.3, -0.4, 0.6, 0.05, -0.8])
    fts = models(base, [{"w": tau}])
    # clip 0.1 of 10 entries: one at each end, |τ| clipped to [0.1, 0.8]; with one task both
    # intra and inter grow with |τ|, so ratio 0.3 keeps the 3 largest: 0.9 (→ 0.8), -0.8, -0.7
    expected = 1.5 * torch.tensor([0.8, 0, 0, -0.7, 0, 0, 0, 0, 0, -0.8])
    merged = pcb_merging(base, fts, ratio=0.3, scale=1.5, clip=0.1)
    torch.testing.assert_close(delta(merged, base, "w"), expected, rtol=0, atol=1e-6)
    (scores,) = pcb_scores(base, fts, ratio=0.3, clip=0.1)
    assert torch.nonzero(scores["w"]).flatten().tolist() == [0, 3, 9]


def test_pcb_scores_follow_the_official_formula():
    # 2 tasks of 10 entries, clip 0.1 (one entry at each end), ratio 0.4 (4 kept per task)
    base = {"w": torch.zeros(10)}
    taus = torch.tensor([[0.9, -0.1, 0.5, -0.7, 0.2, 0.3, -0.4, 0.6, 0.05, -0.8],
                         [0.2, 0.6, -0.5, -0.9, 0.1, 0.4, 0.3, -0.05, 0.7, 0.8]])
    fts = models(base, [{"w": t} for t in taus])
    expected_tau, expected_scores = [], []
    for tau in taus:
        ordered = tau.abs().sort().values
        low, high = ordered[1], ordered[8]
        magnitude = tau.abs().clamp(low, high)
        intra = torch.exp(2 * ((magnitude - low) / (high - low)) ** 2)
        inter = torch.tanh(tau * taus.sum(0))  # the raw τ, not the clipped one
        beta = intra * inter
        cut, top = beta.sort().values[[5, 9]]  # the largest dropped, the largest
        expected_scores.append(((beta - cut) / (top - cut)).clamp(min=0))
        expected_tau.append(tau.sign() * magnitude)
    scores = torch.stack([s["w"] for s in pcb_scores(base, fts, ratio=0.4, clip=0.1)])
    torch.testing.assert_close(scores, torch.stack(expected_scores))
    weights = torch.stack(expected_scores)
    expected = (torch.stack(expected_tau) * weights).sum(0) / weights.sum(0).clamp(min=1e-12)
    merged = pcb_merging(base, fts, ratio=0.4, clip=0.1)
    torch.testing.assert_close(merged["w"], expected)


def test_pcb_merged_vector_is_bounded_by_the_largest_clipped_task_vector():
    base, fts = random_models(4)
    scales = [0.5, 1.2, 0.8, 1.0]
    merged = pcb_merging(base, fts, ratio=0.2, scale=scales, clip=0.01)
    names = ["w0", "w1"]
    taus = [torch.cat([(ft[n] - base[n]).flatten() for n in names]) for ft in fts]
    size = len(taus[0])
    margin = int(0.01 * size)
    clipped = []
    for tau in taus:  # |τ| clipped to its margin-th smallest and margin-th largest
        ordered = tau.abs().sort().values
        clipped.append(tau.abs().clamp(ordered[margin], ordered[size - 1 - margin]))
    bound = max(scales) * torch.stack(clipped).max(0).values
    merged_tau = torch.cat([delta(merged, base, n).flatten() for n in names])
    assert (merged_tau.abs() <= bound + 1e-7).all()
    assert merged_tau.abs().max() > 0.5 * bound.max()  # the bound is not vacuous


def test_pcb_of_identical_models_is_the_scaled_kept_task_vector():
    base = {"w": torch.zeros(10)}
    tau = torch.tensor([0.3, -0.9, 0.1, 0.5, -0.2, 0.7, -0.4, 0.05, 0.6, -0.15])
    fts = models(base, [{"w": tau}] * 3)
    merged = pcb_merging(base, fts, ratio=0.3, scale=2.0, clip=0.0)
    kept = torch.tensor([0, 1, 0, 0, 0, 1, 0, 0, 1, 0], dtype=torch.bool)  # -0.9, 0.7, 0.6
    torch.testing.assert_close(merged["w"], torch.where(kept, 2.0 * tau, 0.0))


# ---- TIES, DARE, task arithmetic ----------------------------------------------------------

# 2 tasks, 6 entries, top_k 0.5 keeps 3 per task:
#   τ1 = [3, -1, 2, 0.5, -4, 1]      → trimmed [3, 0, 2, 0, -4, 0]
#   τ2 = [5, 2.5, -3, 0.5, -1, -2]   → trimmed [5, 2.5, -3, 0, 0, 0]
#   Σ  = [8, 2.5, -1, 0, -4, 0]      → elected signs [+, +, -, 0, -, 0]
#   agreeing entries: [3 and 5, 2.5, -3, none, -4, none]
TIES_BASE = {"w": torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0, -0.5])}
TIES_TAUS = [torch.tensor([3.0, -1.0, 2.0, 0.5, -4.0, 1.0]),
             torch.tensor([5.0, 2.5, -3.0, 0.5, -1.0, -2.0])]


@pytest.mark.parametrize("merge, expected", [("mean", [4.0, 2.5, -3.0, 0.0, -4.0, 0.0]),
                                             ("sum", [8.0, 2.5, -3.0, 0.0, -4.0, 0.0])])
def test_ties_matches_a_hand_computed_case(merge, expected):
    fts = models(TIES_BASE, [{"w": t} for t in TIES_TAUS])
    merged = ties_merging(TIES_BASE, fts, top_k=0.5, scale=0.5, merge=merge)
    torch.testing.assert_close(merged["w"], TIES_BASE["w"] + 0.5 * torch.tensor(expected))


def test_dare_without_drops_is_task_arithmetic_or_ties():
    fts = models(TIES_BASE, [{"w": t} for t in TIES_TAUS])
    ta = task_arithmetic(TIES_BASE, fts, scale=0.5)["w"]
    torch.testing.assert_close(ta, TIES_BASE["w"] + 0.5 * (TIES_TAUS[0] + TIES_TAUS[1]))
    torch.testing.assert_close(dare(TIES_BASE, fts, p=0.0, scale=0.5)["w"], ta)
    ties = dare(TIES_BASE, fts, p=0.0, scale=0.5, then="ties", top_k=0.5)["w"]
    torch.testing.assert_close(ties, TIES_BASE["w"] + 0.5 * torch.tensor(
        [4.0, 2.5, -3.0, 0.0, -4.0, 0.0]))


def test_dare_drops_p_of_the_entries_and_rescales_the_rest():
    base = {"w": torch.zeros(100_000)}
    tau = torch.rand(100_000, generator=torch.Generator().manual_seed(1)) + 0.5  # never 0
    merged = dare(base, models(base, [{"w": tau}]), p=0.3, scale=0.5, seed=4)["w"]
    dropped = merged == 0
    assert abs(dropped.float().mean().item() - 0.3) < 0.01
    torch.testing.assert_close(merged[~dropped], 0.5 * tau[~dropped] / 0.7)


def test_dare_averages_to_task_arithmetic_over_seeds():
    base, fts = random_models(2, sizes=((200,),))
    ta = delta(task_arithmetic(base, fts), base, "w0")
    mean = torch.stack([delta(dare(base, fts, p=0.5, seed=seed), base, "w0")
                        for seed in range(400)]).mean(0)
    assert (mean - ta).norm() / ta.norm() < 0.15  # about 0.05 expected (400 draws)
    one_draw = delta(dare(base, fts, p=0.5, seed=0), base, "w0")
    assert (one_draw - ta).norm() / ta.norm() > 0.5  # a single draw is far from it


def test_dare_masks_depend_on_seed_task_and_tensor_name_only():
    base, fts = random_models(2)
    both = dare(base, fts, seed=5)
    alone = dare(base, fts, seed=5, keys=["w0"])
    assert torch.equal(both["w0"], alone["w0"])  # not on which other tensors merge
    assert torch.equal(alone["w1"], base["w1"])
    assert not torch.equal(dare(base, fts, seed=6)["w0"], both["w0"])


def test_merging_identical_models_gives_what_each_merger_promises():
    base = {"w": torch.zeros(10)}
    tau = torch.tensor([0.3, -0.9, 0.1, 0.5, -0.2, 0.7, -0.4, 0.05, 0.6, -0.15])
    fts = models(base, [{"w": tau}] * 3)
    # task arithmetic adds the N copies: θ₀ + λ·N·τ
    torch.testing.assert_close(task_arithmetic(base, fts, scale=0.2)["w"], 0.2 * 3 * tau)
    # TIES's mean over agreeing copies is τ itself on the kept entries: θ₁ there, θ₀ elsewhere
    kept = tau.abs() >= 0.5  # the top 40%: -0.9, 0.7, 0.6, 0.5
    torch.testing.assert_close(ties_merging(base, fts, top_k=0.4, scale=1.0)["w"],
                               torch.where(kept, tau, 0.0))
    # summing them is N times that
    torch.testing.assert_close(ties_merging(base, fts, top_k=0.4, scale=1.0, merge="sum")["w"],
                               torch.where(kept, 3 * tau, 0.0))


def test_a_scale_per_task_applies_inside_the_sum():
    fts = models(TIES_BASE, [{"w": t} for t in TIES_TAUS])
    merged = task_arithmetic(TIES_BASE, fts, scale=[1.0, 0.0])
    torch.testing.assert_close(merged["w"], fts[0]["w"])
    base, fts = random_models(2)
    one = delta(pcb_merging(base, fts, scale=1.0), base, "w0")
    two = delta(pcb_merging(base, fts, scale=[2.0, 2.0]), base, "w0")
    torch.testing.assert_close(two, 2 * one)


# ---- every merger -------------------------------------------------------------------------

@pytest.mark.parametrize("merger", ORDER_FREE)
def test_the_order_of_the_tasks_does_not_change_the_result(merger):
    base, fts = random_models(3)
    merged = MERGERS[merger](base, fts)
    reordered = MERGERS[merger](base, [fts[2], fts[0], fts[1]])
    for name in base:
        torch.testing.assert_close(reordered[name], merged[name], rtol=0, atol=1e-6)
    assert not torch.equal(merged["w0"], base["w0"])


@pytest.mark.parametrize("merger", sorted(MERGERS))
def test_merging_is_deterministic_and_copies_integer_buffers(merger):
    base, fts = random_models(3)
    first, second = MERGERS[merger](base, fts), MERGERS[merger](base, fts)
    assert list(first) == list(base)
    for name in base:
        assert torch.equal(first[name], second[name])
        assert first[name].dtype == base[name].dtype
        assert first[name].data_ptr() != base[name].data_ptr()  # never shares base's memory
    assert first["bn.num_batches_tracked"].item() == 7


def test_global_and_per_tensor_thresholds_keep_different_entries():
    # one task, a large and a small tensor: the global top half is all of the large one,
    # per tensor each keeps its own larger half
    base = {"big": torch.zeros(2), "small": torch.zeros(2)}
    fts = models(base, [{"big": torch.tensor([4.0, -3.0]), "small": torch.tensor([0.2, -0.1])}])
    whole = ties_merging(base, fts, top_k=0.5, scale=1.0)
    per_tensor = ties_merging(base, fts, top_k=0.5, scale=1.0, thresholds="per_tensor")
    assert whole["big"].tolist() == [4.0, -3.0] and whole["small"].tolist() == [0.0, 0.0]
    assert per_tensor["big"].tolist() == [4.0, 0.0]
    torch.testing.assert_close(per_tensor["small"], torch.tensor([0.2, 0.0]))
    whole = pcb_merging(base, fts, ratio=0.5, clip=0.0)
    per_tensor = pcb_merging(base, fts, ratio=0.5, clip=0.0, thresholds="per_tensor")
    assert whole["small"].tolist() == [0.0, 0.0]
    torch.testing.assert_close(per_tensor["small"], torch.tensor([0.2, 0.0]))


def test_keys_leave_per_task_heads_out():
    base = {"body": torch.zeros(4), "head": torch.zeros(2)}
    fts = [{"body": torch.full((4,), 1.0), "head": torch.ones(3)},
           {"body": torch.full((4,), 3.0), "head": torch.ones(5), "head2": torch.ones(1)}]
    merged = ties_merging(base, fts, top_k=1.0, scale=1.0, keys=["body"])
    assert merged["body"].tolist() == [2.0] * 4
    assert merged["head"].tolist() == [0.0, 0.0]
    with pytest.raises(ConfigError, match="head"):
        ties_merging(base, fts)


def test_check_compatible_names_the_missing_extra_and_misshaped_keys():
    base = {"a": torch.zeros(2, 3), "b": torch.zeros(4), "n": torch.tensor(0)}
    fine = {"a": torch.zeros(2, 3), "b": torch.zeros(4), "n": torch.tensor(0)}
    check_compatible(base, [fine, dict(fine)])
    missing = {"a": torch.zeros(2, 3), "n": torch.tensor(0)}
    extra = {**fine, "head.weight": torch.zeros(1)}
    misshaped = {**fine, "a": torch.zeros(3, 3)}
    with pytest.raises(ConfigError) as error:
        check_compatible(base, [fine, missing, extra, misshaped])
    message = str(error.value)
    assert "model 0" not in message
    assert "fine-tuned model 1: missing keys b" in message
    assert "fine-tuned model 2: extra keys head.weight" in message
    assert "fine-tuned model 3: shapes differ: a (2, 3) in the base, (3, 3) here" in message
    assert "same base run" in message
    check_compatible(base, [extra, misshaped], names=["b", "n"])  # only those are checked
    with pytest.raises(ConfigError, match="keys not in the base model: c"):
        check_compatible(base, [fine], names=["b", "c"])


BAD_ARGUMENTS = {
    "top_k": lambda b, f: ties_merging(b, f, top_k=0.0),
    "merge": lambda b, f: ties_merging(b, f, merge="max"),
    "thresholds": lambda b, f: dare(b, f, thresholds="layer"),
    "p": lambda b, f: dare(b, f, p=1.0),
    "then": lambda b, f: dare(b, f, then="pcb"),
    "ratio": lambda b, f: pcb_merging(b, f, ratio=1.5),
    "clip": lambda b, f: pcb_merging(b, f, clip=0.5),
    "form": lambda b, f: pcb_merging(b, f, form="mergekit"),
    "scale": lambda b, f: task_arithmetic(b, f, scale=[0.3]),
    "finetuned": lambda b, f: task_arithmetic(b, []),
}


@pytest.mark.parametrize("key", sorted(BAD_ARGUMENTS))
def test_bad_arguments_raise_config_errors_naming_the_argument(key):
    base, fts = random_models(2)
    with pytest.raises(ConfigError, match=key):
        BAD_ARGUMENTS[key](base, fts)


def test_a_30m_entry_tensor_merges_with_global_thresholds():
    # torch.quantile refuses more than 16M entries; the thresholds here are exact selections
    size = 30_000_000
    gen = torch.Generator().manual_seed(0)
    base = {"w": torch.zeros(size)}
    tau = torch.randn(size, generator=gen)
    merged = ties_merging(base, [{"w": tau}], top_k=0.2, scale=1.0)
    assert int((merged["w"] != 0).sum()) == 6_000_000


@pytest.mark.slow
def test_pcb_merges_a_30m_entry_tensor_with_global_thresholds():
    size = 30_000_000
    gen = torch.Generator().manual_seed(0)
    base = {"w": torch.zeros(size)}
    fts = [{"w": 1e-3 * torch.randn(size, generator=gen)} for _ in range(2)]
    scores = pcb_scores(base, fts, ratio=0.1)
    assert [int((s["w"] > 0).sum()) for s in scores] == [3_000_000, 3_000_000]
