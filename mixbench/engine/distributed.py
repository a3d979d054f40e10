"""Multi-process data-parallel training (torch DDP) on one machine or under torchrun/SLURM.

``trainer.devices=N`` starts N processes from inside the Hydra job (torch.multiprocessing
spawn; NCCL on CUDA, gloo on CPU). Under ``torchrun`` the ranks read RANK / WORLD_SIZE /
LOCAL_RANK from the environment instead, and a SLURM job with one task per GPU (Hydra's
submitit launcher) exports its task ids as those variables. Each rank trains on its slice
of every global batch; rank 0 alone writes checkpoints, logs and results.json."""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from mixbench.errors import DistributedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SINGLE = DistInfo()


def init_process_group(info: DistInfo, device_type: str) -> None:
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)


def launcher_ranks() -> DistInfo | None:
    """This process's rank when a launcher started every rank: torchrun (RANK, WORLD_SIZE,
    LOCAL_RANK in the environment) or a submitit/SLURM job with one task per GPU (its task
    ids, exported as those variables). None when this process is the whole job."""
    if "SUBMITIT_EXECUTOR" in os.environ or "SUBMITIT_LOCAL_JOB_ID" in os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        tasks = TorchDistributedEnvironment()
        if tasks.world_size > 1:
            tasks.export(set_cuda_visible_devices=False, overwrite=True)
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or "RANK" not in os.environ:
        return None
    return DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                    int(os.environ.get("LOCAL_RANK", 0)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broadcast_run_dir(run_dir: Path, info: DistInfo) -> Path:
    """Every rank uses rank 0's run folder. Under torchrun each rank's Hydra made its own
    (timestamped) folder; another rank's stray folder is removed when it holds nothing but
    Hydra's own files."""
    chosen = [str(run_dir)]
    dist.broadcast_object_list(chosen, src=0)
    target = Path(chosen[0])
    if target != run_dir and run_dir.is_dir() and \
            {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log"}:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
    return target


def all_gather_rows(local: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's rows in rank order (ranks may hold different counts), so a
    sharded evaluation sees each sample exactly once, in the single-process order."""
    if not info.enabled:
        return local
    # NCCL moves CUDA tensors only; gloo moves CPU tensors.
    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))
    local = local.to(device)
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(info.world_size)]
    dist.all_gather(sizes, torch.tensor([len(local)], device=device))
    largest = int(max(s.item() for s in sizes))
    padded = torch.zeros((largest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[:len(local)] = local
    gathered = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:int(n.item())] for g, n in zip(gathered, sizes)]).cpu()


def shard_range(n: int, info: DistInfo) -> tuple[int, int]:
    """Rank's contiguous share of n rows (the first n % world ranks get one more)."""
    base, extra = divmod(n, info.world_size)
    start = info.rank * base + min(info.rank, extra)
    return start, start + base + (info.rank < extra)


def _spawned(rank: int, world_size: int, port: int, fn, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    fn(DistInfo(rank, world_size, rank), *args)


def spawn(fn, world_size: int, *args) -> None:
    """Run ``fn(DistInfo, *args)`` in ``world_size`` fresh processes on this machine. If any
    rank fails, the others are stopped and a DistributedError says which rank and why."""
    import torch.multiprocessing as mp

    advice = ("The other processes were stopped; the last checkpoint is kept: fix the cause "
              "and run again with trainer.resume=true.")
    try:
        mp.spawn(_spawned, args=(world_size, free_port(), fn, args), nprocs=world_size,
                 join=True)
    except mp.ProcessRaisedException as err:
        # The child's traceback arrives as text; its last line is "Type: message".
        cause = [line for line in str(err).strip().splitlines() if line.strip()][-1]
        raise DistributedError(f"process {err.error_index} of {world_size} failed: "
                               f"{cause}. {advice}") from None
    except mp.ProcessExitedException as err:
        how = f"was killed by {err.signal_name}" if err.signal_name else \
            f"exited with code {err.exit_code}"
        raise DistributedError(f"process {err.error_index} of {world_size} {how} (out of "
                               f"memory?). {advice}") from None
