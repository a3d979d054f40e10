"""Temperature scaling (Guo et al., 2017): one scalar T > 0 dividing the logits, fitted by
LBFGS on the validation NLL. We optimise log T so T stays positive without constraints."""
from __future__ import annotations

import torch

from mixbench.errors import ConfigError


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    logits = logits.detach().to("cpu", torch.float64)
    labels = labels.detach().to("cpu", torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = log_t.exp().item()
    if not torch.isfinite(torch.tensor(temperature)) or temperature <= 0:
        return 1.0  # degenerate validation set (e.g. all-correct with exploding logits)
    return temperature


# Where the temperature may be fitted. Never the test split: a temperature fitted on the
# predictions it is then scored on flatters every after-TS metric. Nor the training split:
# its logits are those the model was fitted to, so a temperature fitted there does not
# calibrate unseen data.
TEMPERATURE_SPLITS = ("val", "none")


def check_temperature_split(split: str, val_samples: int) -> bool:
    """Whether temperature scaling runs (``eval.temperature_split``: ``val`` fits it on the
    validation split, ``none`` reports it as not fitted); a clear error when it cannot."""
    if split not in TEMPERATURE_SPLITS:
        raise ConfigError(f"eval.temperature_split must be one of {', '.join(TEMPERATURE_SPLITS)}"
                          f", got {split!r} (the test split is never used to fit it)")
    if split == "val" and val_samples == 0:
        raise ConfigError("eval.temperature_split=val, but the dataset has no validation split "
                          "(dataset.val_size=0 or val_fraction=0): hold some images out "
                          "(dataset.val_size=5000) or set eval.temperature_split=none to "
                          "report the temperature as not fitted")
    return split == "val"
