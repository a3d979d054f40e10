"""Retrieval metrics and Metrix steps: time and peak memory.

    python benchmarks/retrieval.py metrics              # N = 10k and 60k, d = 128
    python benchmarks/retrieval.py metrics --n 10000 --impls ours
    python benchmarks/retrieval.py step                 # a Metrix step against a plain one
    python benchmarks/retrieval.py nmi-seeds --run RUN  # NMI's spread over k-means seeds

``metrics``: mixbench's chunked Recall@K + MAP@R (``recall_and_map_at_r``) and NMI against
pytorch-metric-learning's ``AccuracyCalculator`` (precision@1, MAP@R with
k="max_bin_count", NMI) on the same random embeddings: N L2-normalised d-dim vectors in 10
classes (so MAP@R looks N/10 − 1 deep). PML gets a torch k-NN (``CustomKNN`` over
``LpDistance``, batched) and the same k-means, as faiss is not installed. Each (implementation,
N) runs in a fresh subprocess; peak memory is the process's resident high-water mark minus
its size before the call (CPU), or ``torch.cuda.max_memory_allocated`` beyond the inputs (GPU).

``step``: one training step (forward, loss, backward) of the small CNN on a 28×28 batch of
50 (5 classes × 10), plain contrastive / multi-similarity against Metrix in each mode with
its positive-negative pairing (the anchor-negative pairing has no pairs in m-per-class
batches). Medians over ``--repeats``; ratios are measured side by side in one process.

``nmi-seeds``: NMI of one fixed embedding (the test split of a retrieval run, ``--run``; else
the random embeddings of ``metrics`` at the first ``--n``) under k-means seeds 0 ..
``--seeds``−1, with one k-means++ start and with each count of ``--starts``: mean, std and range
over the seeds, and the time of one NMI."""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import median_ms, quiet_malloc  # noqa: E402


def embeddings(n: int, dim: int, device):
    import torch

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 10
    centers = torch.randn(10, dim, generator=gen)
    x = torch.nn.functional.normalize(centers[labels] + 2.0 * torch.randn(n, dim, generator=gen),
                                      dim=1)
    return x.to(device), labels.to(device)


def one_metrics_case(impl: str, n: int, dim: int, device: str) -> dict:
    """Run in a subprocess: time and peak memory of one implementation at one N."""
    import torch

    from mixbench.eval.retrieval import NMI_STARTS, kmeans, nmi, recall_and_map_at_r

    x, y = embeddings(n, dim, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if impl == "ours":
        def run():
            out = recall_and_map_at_r(x, y, (1, 2, 4, 8))
            out["nmi"] = nmi(x, y)
            return out
    else:
        from pytorch_metric_learning.distances import LpDistance
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
        from pytorch_metric_learning.utils.inference import CustomKNN

        calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r",
                                           "NMI"), k="max_bin_count", device=torch.device(device),
                                  knn_func=CustomKNN(LpDistance(), batch_size=256),
                                  kmeans_func=lambda e, c: kmeans(e, c, seed=0,
                                                                  starts=NMI_STARTS))

        def run():
            return calc.get_accuracy(x, y, ref_includes_query=True)

    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = run()
    sync()
    seconds = time.perf_counter() - start
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    return {"impl": impl, "n": n, "seconds": seconds, "peak_mib": peak,
            "metrics": {k: round(float(v), 4) for k, v in out.items()}}


def metrics(args) -> None:
    rows = []
    for n in args.n:
        for impl in args.impls:
            cmd = [sys.executable, __file__, "_case", impl, str(n), str(args.dim), args.device]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            if done.returncode:
                rows.append({"impl": impl, "n": n, "error": done.stderr.strip()[-300:]})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n| N | implementation | time s | peak memory MiB | R@1 | MAP@R | NMI |  "
          f"({args.device})")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['n']} | {r['impl']} | failed: {r['error'][-80:]} | | | | |")
            continue
        m = r["metrics"]
        r1 = m.get("recall@1", m.get("precision_at_1"))
        mapr = m.get("map@r", m.get("mean_average_precision_at_r"))
        print(f"| {r['n']} | {r['impl']} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {r1:.4f} | "
              f"{mapr:.4f} | {m.get('nmi', m.get('NMI')):.4f} |")


def fixed_embedding(args):
    """The test split's embeddings and labels of the retrieval run ``args.run`` (its
    ``last.pt``), else the random ones of ``metrics``."""
    if args.run is None:
        return embeddings(args.n[0], args.dim, args.device)
    import dataclasses

    import torch
    from omegaconf import OmegaConf

    from mixbench.components import DATASETS, build_components
    from mixbench.data import make_loader
    from mixbench.data.retrieval import split_by_class
    from mixbench.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, restore_model
    from mixbench.eval.evaluate import predict
    from mixbench.models.embedding import EmbeddingNet

    path = Path(args.run) / CHECKPOINT_NAME
    state = load_checkpoint(path)
    cfg = OmegaConf.create(state["config"])
    p, device = cfg.protocol, torch.device(args.device)
    data = split_by_class(dataclasses.replace(DATASETS.build(cfg.dataset),
                                              name=cfg.dataset.name), p.train_classes)
    parts = build_components(cfg, device, data=data)
    model = EmbeddingNet(parts.model, p.embedding_dim, pooling=p.pooling,
                         freeze_bn=p.freeze_bn).to(device)
    restore_model(model, state["model"], path)
    loader = make_loader(data, "test", cfg.trainer.eval_batch_size, train=False, device=device)
    x, y = predict(model.eval(), loader, device)
    return x.to(device), y.to(device)


def nmi_seeds(args) -> None:
    import numpy as np

    from mixbench.eval.retrieval import nmi

    x, y = fixed_embedding(args)
    print(f"| k-means starts | seeds | NMI % mean | std | min–max | s per NMI |  "
          f"({args.run or 'random embeddings'}: N {len(x)}, d {x.shape[1]}, {args.device})")
    print("|---|---|---|---|---|---|")
    for starts in sorted({1, *args.starts}):
        start = time.perf_counter()
        values = 100 * np.array([nmi(x, y, seed=s, starts=starts) for s in range(args.seeds)])
        seconds = (time.perf_counter() - start) / args.seeds
        print(f"| {starts} | {args.seeds} | {values.mean():.2f} | {values.std():.2f} | "
              f"{values.min():.2f}–{values.max():.2f} | {seconds:.3f} |", flush=True)


def step(args) -> None:
    import torch

    from mixbench.components import BACKBONES, LOSSES, METHODS
    from mixbench.models.embedding import EmbeddingNet

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = EmbeddingNet(BACKBONES.build({"name": "small_cnn"}, num_classes=5), 32).to(device)
    x = torch.randn(args.batch, 1, 28, 28, device=device)
    y = torch.arange(args.batch // args.m, device=device).repeat_interleave(args.m)
    methods = {"plain": METHODS.build({"name": "erm"}, num_classes=5)}
    for mode in ("embed", "feature", "input"):
        methods[mode] = METHODS.build({"name": "metrix", "mode": mode,
                                       "pairing": "positive_negative"}, num_classes=5)
    print(f"| loss | method | step ms | × plain |  ({args.device}, batch {args.batch}, "
          f"{args.batch // args.m} classes × {args.m})")
    print("|---|---|---|---|")
    for loss_name in ("contrastive", "multi_similarity"):
        loss_fn = LOSSES.build({"name": loss_name}).to(device)
        times = {}
        for name, method in methods.items():
            def one():
                out = method.step(model, (x, y), loss_fn)
                model.zero_grad(set_to_none=True)
                out.loss.backward()
            times[name] = median_ms(one, args.repeats, sync)
        for name, ms in times.items():
            print(f"| {loss_name} | {name} | {ms:.2f} | {ms / times['plain']:.2f} |", flush=True)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_case":
        quiet_malloc()
        impl, n, dim, device = argv[1], int(argv[2]), int(argv[3]), argv[4]
        print(json.dumps(one_metrics_case(impl, n, dim, device)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["metrics", "step", "nmi-seeds"])
    parser.add_argument("--n", type=int, nargs="+", default=[10000, 60000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--impls", nargs="+", default=["ours", "pml"], choices=["ours", "pml"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--run", default=None, help="nmi-seeds: a retrieval run folder")
    parser.add_argument("--seeds", type=int, default=20, help="nmi-seeds: k-means seeds")
    parser.add_argument("--starts", type=int, nargs="+", default=[10, 30],
                        help="nmi-seeds: k-means++ starts per NMI (1 is always measured)")
    args = parser.parse_args(argv)
    quiet_malloc()
    {"metrics": metrics, "step": step, "nmi-seeds": nmi_seeds}[args.what](args)


if __name__ == "__main__":
    main()
