"""Temperature scaling (Guo et al., 2017): one scalar T > 0 dividing the logits, fitted by
LBFGS on the validation NLL. We optimise log T so T stays positive without constraints."""
from __future__ import annotations

import torch


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
