"""Where a synthetic set starts, and the real-subset baselines it is compared with: ``ipc``
images per class chosen at random (MTT's ``--pix_init real``), nearest to K-means centres of
the pixels (DC-Bench's K-means baseline), or nearest to K-means centres of an expert's logits
(AST's representative initialisation)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from sklearn.cluster import KMeans

from mixbench.errors import ConfigError

INITS = ("real", "noise", "kmeans", "representative")


def check_ipc(ipc, labels: torch.Tensor, num_classes: int) -> None:
    if not isinstance(ipc, int) or ipc < 1:
        raise ConfigError(f"protocol.ipc (images per class) must be an integer >= 1, "
                          f"got {ipc!r}")
    counts = torch.bincount(labels, minlength=num_classes)
    if int(counts.min()) < ipc:
        raise ConfigError(f"protocol.ipc={ipc} but class {int(counts.argmin())} has only "
                          f"{int(counts.min())} training images: lower protocol.ipc")


def random_real(labels: torch.Tensor, ipc: int, num_classes: int,
                generator: torch.Generator) -> torch.Tensor:
    """Row indices: ``ipc`` training images per class drawn at random, class by class."""
    check_ipc(ipc, labels, num_classes)
    rows = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        rows.append(members[torch.randperm(len(members), generator=generator)[:ipc]])
    return torch.cat(rows)


def nearest_to_centres(features: np.ndarray, ipc: int, clusters: int, seed: int) -> np.ndarray:
    """``ipc`` distinct rows of ``features``: K-means with ``clusters`` centres, then from each
    cluster the members nearest its centre, ipc // clusters each and one more from the
    largest clusters for the remainder; a cluster short of members leaves its share to the
    rows nearest any centre."""
    clusters = min(clusters, ipc, len(features))
    kmeans = KMeans(clusters, n_init=3, random_state=seed).fit(features)
    distance = kmeans.transform(features)  # rows × centres
    sizes = np.bincount(kmeans.labels_, minlength=clusters)
    share = np.full(clusters, ipc // clusters)
    share[np.argsort(-sizes, kind="stable")[:ipc - share.sum()]] += 1
    chosen: list[int] = []
    for k in range(clusters):
        members = np.flatnonzero(kmeans.labels_ == k)
        chosen += members[np.argsort(distance[members, k], kind="stable")][:share[k]].tolist()
    if len(chosen) < ipc:
        rest = [i for i in np.argsort(distance.min(1), kind="stable") if i not in set(chosen)]
        chosen += rest[:ipc - len(chosen)]
    return np.asarray(chosen)


def centre_real(features: torch.Tensor, labels: torch.Tensor, ipc: int, num_classes: int,
                seed: int, clusters: int | None = None) -> torch.Tensor:
    """Row indices: per class, the ``ipc`` rows nearest K-means centres of ``features`` (N×D)
    with ``clusters`` centres (default: ``ipc``, one image per centre)."""
    check_ipc(ipc, labels, num_classes)
    rows = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        picked = nearest_to_centres(features[members].double().cpu().numpy(), ipc,
                                    clusters or ipc, seed)
        rows.append(members[torch.from_numpy(picked)])
    return torch.cat(rows)


def kmeans_real(images: torch.Tensor, labels: torch.Tensor, ipc: int, num_classes: int,
                seed: int) -> torch.Tensor:
    """Row indices: per class, the real image nearest each of ``ipc`` K-means centres of the
    pixels."""
    return centre_real(images.flatten(1), labels, ipc, num_classes, seed)


@torch.no_grad()
def representative(logits_of: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                   labels: torch.Tensor, ipc: int, num_classes: int, seed: int,
                   clusters: int = 10, batch_size: int = 512) -> torch.Tensor:
    """AST's representative initialisation: K-means with ``clusters`` centres on an expert's
    logits of each class's real images, and the images nearest the centres. AST's code takes
    ipc // 10 images per centre, which selects nothing below ipc 10 (and too few when ipc is
    not a multiple of 10); here the centres are min(ipc, ``clusters``) and the remainder goes
    to the largest clusters, so every class gets exactly ``ipc`` images."""
    logits = torch.cat([logits_of(chunk) for chunk in images.split(batch_size)])
    return centre_real(logits, labels, ipc, num_classes, seed, clusters)
