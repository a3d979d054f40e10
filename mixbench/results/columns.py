"""A leaderboard column: which number of a run, its header, unit and ranking direction."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    scale: float = 1.0
    higher_is_better: bool | None = None  # None: not ranked (e.g. temperature, time)
    decimals: int = 3

    @property
    def title(self) -> str:
        arrow = {True: " ↑", False: " ↓", None: ""}[self.higher_is_better]
        return self.header + arrow


# The headline numbers a protocol writes in its own section of results.json, shown before the
# task's columns in that protocol's tables (the first one ranks the rows).
SECTION_COLUMNS = {
    "continual": (Column("avg_incremental_acc", "avg inc. acc %", 100, True, 2),
                  Column("final_avg_acc", "final acc %", 100, True, 2),
                  Column("forgetting", "forgetting %", 100, False, 2),
                  Column("bwt", "BWT %", 100, True, 2)),
    # tools/merge.py: means over the tasks of the merged model, against each fine-tuned model
    # on its own task (normalised accuracy) and θ₀'s body under each task's head
    "merge": (Column("avg_top1", "avg top-1 %", 100, True, 2),
              Column("avg_normalized", "normalised acc %", 100, True, 2),
              Column("individual_avg_top1", "fine-tuned avg %", 100, None, 2),
              Column("base_avg_top1", "θ₀ avg %", 100, None, 2),
              Column("scale", "λ", 1, None, 2)),
    # protocol=retrieval: the epoch with the best test R@1 and its Recall@K (the official
    # Metrix code's number: test-set selection). No leading columns: the retrieval task's
    # own columns show them after the final epoch's, which rank the rows.
    "retrieval": (),
    # tools/adapt.py: means over the corruptions of the adapted predictions (error as the
    # UnMix-TNS paper reports it)
    "adaptation": (Column("mean_error", "error % (mean)", 100, False, 2),
                   Column("mean_nll", "NLL", 1, False, 3),
                   Column("mean_ece", "ECE %", 100, False, 2),
                   Column("mean_aece", "aECE %", 100, False, 2),
                   Column("mean_brier", "Brier", 1, False, 3)),
    # protocol=distill: networks trained on the synthetic set, final epoch (mean over
    # protocol.num_eval nets); the best epoch on the test set is what MTT/AST's code reports
    # (test-set selection, not ranked); real subsets of the same size as baselines
    "distill": (Column("syn_top1", "distilled top-1 %", 100, True, 2),
                Column("syn_best_top1", "best test epoch % (test-selected)", 100, None, 2),
                Column("random_top1", "random real %", 100, None, 2),
                Column("kmeans_top1", "K-means real %", 100, None, 2),
                Column("syn_lr", "learned α", 1, None, 4)),
    # protocol=experts: final test top-1 and the mean per-epoch parameter change ‖Δθ‖
    # (AST's smoothness) over epochs 1-10 and after
    "experts": (Column("expert_top1", "expert top-1 %", 100, True, 2),
                Column("change_early", "‖Δθ‖/epoch, first 10", 1, None, 3),
                Column("change_late", "‖Δθ‖/epoch, later", 1, None, 3)),
}

# A continual run's per-step records (results.json's continual.steps), averaged over seeds in
# a table of their own: not ranked (steps are not competitors).
STEP_COLUMNS = (Column("seen", "seen classes", 1, None, 0),
                Column("top1", "top-1 % on seen", 100, None, 2),
                Column("acc_old", "old classes %", 100, None, 2),
                Column("acc_new", "new classes %", 100, None, 2),
                Column("newest_share", "predicted newest %", 100, None, 1),
                Column("ece", "ECE %", 100, None, 2),
                Column("ts_ece", "ECE after TS %", 100, None, 2),
                Column("norm_ratio_before", "new/old row norm", 1, None, 3),
                Column("norm_ratio_after", "after aligning", 1, None, 3))

# Every task's tables end with what the run cost.
TIMING_COLUMNS = (Column("train_s", "train s", 1, None, 1),
                  Column("samples_per_s", "samples/s", 1, None, 0))

# A merge's search (results.json's merge.search): the mean validation top-1 over the tasks at
# each λ tried, averaged over seeds in a table of its own (how sensitive a merger is to λ).
SEARCH_COLUMNS = (Column("val_top1", "val top-1 % (mean over tasks)", 100, None, 2),)

# An adaptation's per-corruption records (results.json's adaptation.corruptions), averaged over
# source seeds in tables of their own, a column per corruption.
CORRUPTION_COLUMNS = (Column("error", "error %", 100, None, 2),
                      Column("ece", "ECE %", 100, None, 2))
