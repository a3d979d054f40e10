"""Checkpoints: written atomically, read with ``weights_only=True`` (loading never runs code).

A checkpoint holds only tensors, numbers, strings, lists and dicts: model (unwrapped),
optimiser, scheduler, AMP scaler, method state, completed epochs, history and the config."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mixbench.errors import CheckpointError

FORMAT = "mixbench-checkpoint-v1"
CHECKPOINT_NAME = "last.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, then rename: a crash mid-write leaves
    the previous checkpoint intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/garbage files
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {str(err)[:200]}). "
            f"It is corrupt, truncated or not a safe (weights-only) file. Delete it to start "
            f"the run over, or point to another checkpoint.") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a mixbench checkpoint (no '{FORMAT}' marker)")
    return state


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A model state_dict from a mixbench checkpoint, a run folder, or a plain state_dict file
    (e.g. a teacher or pretrained backbone a user points to)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"weights file {path} cannot be read safely "
                              f"({type(err).__name__}: {str(err)[:200]})") from err
    if isinstance(state, dict) and state.get("format") == FORMAT:
        return state["model"]
    if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    raise CheckpointError(f"{path} holds neither a mixbench checkpoint nor a state_dict")


def restore_model(model: torch.nn.Module, state_dict: dict, source: str | Path) -> None:
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {source} does not match the model built from the config "
            f"(different backbone or class count?): {str(err)[:300]}") from err
