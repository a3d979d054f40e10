"""Batch iterators: in-memory tensors (fast path) or a torch DataLoader (image folders)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from mixbench.data.bundle import PADDING_MODES, Augment, DataBundle, Split
from mixbench.engine.distributed import SINGLE, DistInfo, shard_range


def random_crop_flip(x: torch.Tensor, padding: int, hflip: bool,
                     padding_mode: str = "zeros") -> torch.Tensor:
    """Per-sample random crop (after padding) and horizontal flip, as whole-batch tensor
    ops: no Python loop over the batch. Uses the global torch RNG of x's device.
    ``padding_mode``: ``zeros``, ``reflect`` (mirror without repeating the edge pixel:
    torchvision's ``RandomCrop(padding_mode="reflect")``, OpenMixup's CIFAR crop) or
    ``replicate`` (repeat the edge pixel)."""
    b, _, h, w = x.shape
    if padding > 0:
        padded = torch.nn.functional.pad(x, (padding, padding, padding, padding),
                                         mode=PADDING_MODES[padding_mode])
        offset = torch.randint(0, 2 * padding + 1, (2, b), device=x.device)
        rows = offset[0, :, None] + torch.arange(h, device=x.device)  # B×H
        cols = offset[1, :, None] + torch.arange(w, device=x.device)  # B×W
        batch = torch.arange(b, device=x.device)[:, None, None]
        # Advanced indexing gives B×H×W×C; move channels back.
        x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        x = x.permute(0, 3, 1, 2)
    if hflip:
        flip = torch.rand(b, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.contiguous()


class InMemoryLoader:
    """Yields (x, y) batches from tensors kept on ``device``: uint8 → float, augment, normalise.
    With ``with_index`` it yields (x, y, index), the rows' positions in the split, and
    ``fetch(index)`` prepares any other rows alike (methods that draw partners from the whole
    training set, such as C-Mixup, use both).

    Shuffling draws from the global torch RNG, which the trainer reseeds every epoch, so an
    epoch's order depends only on (seed, epoch): that is what makes resume exact.

    Under DDP (``shard`` of several ranks) every rank draws the same order; a training loader
    yields this rank's slice of each global batch of ``batch_size`` rows (so the ranks together
    see exactly the batches one process would), an evaluation loader this rank's contiguous
    share of the rows."""

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool, drop_last: bool,
                 device: torch.device | str, mean, std, augment: Augment | None = None,
                 with_index: bool = False, shard: DistInfo = SINGLE):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if shuffle and batch_size % shard.world_size:
            raise ValueError(f"the batch size {batch_size} does not split evenly over "
                             f"{shard.world_size} processes")
        self.device = torch.device(device)
        self.x = split.x.to(self.device)
        self.y = split.y.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        # Never drop everything: a split smaller than one batch still yields one batch.
        self.drop_last = drop_last and len(self.y) >= batch_size
        self.augment = augment
        self.with_index = with_index
        self.shard = shard
        # Evaluation: this rank's rows. Training: all rows, sliced per global batch.
        self.rows = torch.arange(*shard_range(len(self.y), shard) if not shuffle
                                 else (0, len(self.y)), device=self.device)
        is_image = self.x.dim() == 4
        shape = (1, -1, 1, 1) if is_image else (1, -1)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(shape)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(shape)

    def __len__(self) -> int:
        n = len(self.rows)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = self.rows[torch.randperm(len(self.rows), device=self.device)] if self.shuffle \
            else self.rows
        local = self.batch_size // self.shard.world_size
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            if self.shuffle and self.shard.enabled:
                idx = idx[self.shard.rank * local:(self.shard.rank + 1) * local]
            x, y = self.fetch(idx)
            yield (x, y, idx) if self.with_index else (x, y)

    def fetch(self, index: torch.Tensor, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``index`` of the split, prepared as a batch (augmented when training, unless
        ``augment=False``)."""
        return self._prepare(self.x[index], augment), self.y[index]

    def _prepare(self, x: torch.Tensor, augment: bool = True) -> torch.Tensor:
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if augment and self.augment is not None and x.dim() == 4:
            x = random_crop_flip(x, self.augment.crop_padding, self.augment.hflip,
                                 self.augment.padding_mode)
        return (x - self.mean) / self.std


def make_loader(bundle: DataBundle, which: str, batch_size: int, *, train: bool,
                device: torch.device | str, num_workers: int = 0, shard: DistInfo = SINGLE,
                seed: int = 0):
    """The loader for one split. ``train`` turns on shuffling, augmentation and drop_last
    (a final batch of 1 would break BatchNorm), and in-memory batches then carry their
    indices: (x, y, index). ``batch_size`` is global: under DDP each rank loads its share
    (a Dataset split then shuffles by ``seed`` and the epoch, as DistributedSampler does)."""
    split = bundle.splits()[which]
    if isinstance(split, Split):
        return InMemoryLoader(split, batch_size, shuffle=train, drop_last=train, device=device,
                              mean=bundle.mean, std=bundle.std,
                              augment=bundle.augment if train else None, with_index=train,
                              shard=shard)
    if isinstance(split, Dataset):
        sampler = None
        if shard.enabled and train:  # the trainer calls set_epoch every epoch
            sampler = DistributedSampler(split, shard.world_size, shard.rank, shuffle=True,
                                         seed=seed, drop_last=True)
            batch_size //= shard.world_size
        elif shard.enabled:  # contiguous shares, no padding: each sample evaluated once
            split = Subset(split, range(*shard_range(len(split), shard)))
        return DataLoader(split, batch_size=batch_size, shuffle=train and sampler is None,
                          sampler=sampler, drop_last=train,
                          num_workers=num_workers, pin_memory=torch.device(device).type == "cuda",
                          persistent_workers=num_workers > 0)
    raise TypeError(f"split '{which}' is a {type(split).__name__}, expected Split or Dataset")
