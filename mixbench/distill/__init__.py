"""Dataset distillation by trajectory matching (MTT) with AST's smooth expert trajectories
and student options (docs/distillation.md). ``protocol=experts`` trains the experts,
``protocol=distill`` learns and evaluates the synthetic set."""
from mixbench.distill.augment import DSA
from mixbench.distill.init import kmeans_real, random_real, representative
from mixbench.distill.matching import (ParamLayout, StudentOptions, match_trajectory,
                                       trajectory_matching_loss, unroll)
from mixbench.distill.smooth import AugmentedStep, gradient_penalty, loss_scale

__all__ = ["DSA", "AugmentedStep", "ParamLayout", "StudentOptions", "gradient_penalty",
           "kmeans_real", "loss_scale", "match_trajectory", "random_real", "representative",
           "trajectory_matching_loss", "unroll"]
