"""derive_seed: the one way a run's seed becomes the seed of an epoch, a step, an expert or an
evaluation network."""
import zlib

from mixbench.engine.seeding import derive_seed

P, M = 1_000_003, 2**63


def test_an_integer_key_is_the_seed_formula_runs_were_trained_with():
    # epochs, steps and experts keep their seeds: finished runs replay and resume the same
    assert derive_seed(3, 7) == (3 * P + 7) % M
    assert derive_seed(0, 0) == 0
    assert derive_seed(2**62, 5) == (2**62 * P + 5) % M


def test_keys_fold_in_turn_and_strings_by_their_crc():
    inner = derive_seed(1, 4)
    assert derive_seed(1, 4, "conv.weight") == (inner * P + zlib.crc32(b"conv.weight")) % M
    assert derive_seed(1, "eval", 0) == derive_seed(derive_seed(1, "eval"), 0)


def test_evaluation_seeds_never_meet_iteration_or_epoch_seeds():
    # the old evaluation seeds (seed, 100000 + k) were the seeds of iteration 100000 + k
    iterations = {derive_seed(seed, it) for seed in range(3) for it in range(200_000)}
    evaluations = {derive_seed(seed, "eval", k) for seed in range(3) for k in range(100)}
    assert len(evaluations) == 300
    assert not evaluations & iterations


def test_a_named_family_differs_from_another():
    assert derive_seed(0, "eval", 1) != derive_seed(0, "init", 1)
