"""Retrieval (metric learning): the model embeds, and test images of classes never seen in
training are retrieved among each other. Recall@K on the test split in the history (every
epoch, so the best epoch can be read off), and at the end Recall@K, MAP@R, NMI and
utilisation (mixbench.eval.retrieval)."""
from __future__ import annotations

import contextlib


from mixbench.engine.distributed import SINGLE, DistInfo
from mixbench.eval.evaluate import predict
from mixbench.eval.retrieval import (NMI_STARTS, recall_and_map_at_r, retrieval_metrics,
                                     utilization)
from mixbench.errors import ConfigError
from mixbench.registry import TASKS
from mixbench.results.columns import TIMING_COLUMNS, Column
from mixbench.tasks.base import Task

# Every K a preset uses (1,2,4,8 for CUB and Cars; 1,10,100,1000 for SOP): a table shows the
# ones its runs have.
RECALL_KS = (1, 2, 4, 8, 10, 16, 32, 100, 1000)
# results.json's retrieval section: the epoch with the best test R@1 (what the official code
# reports: selection on the test set) and its Recall@K
BEST = "best_"


def recall_columns(prefix: str, header: str) -> tuple[Column, ...]:
    return tuple(Column(f"{prefix}recall@{k}", f"{header}R@{k} %", 100, True, 2)
                 for k in RECALL_KS)


@TASKS.register("retrieval")
class Retrieval(Task):
    name = "retrieval"
    columns = (
        *recall_columns("", ""),
        Column("map@r", "MAP@R %", 100, True, 2),
        Column("nmi", "NMI %", 100, True, 2),
        Column("utilization", "utilisation", 1, False, 4),
        # the same runs at the epoch the test set picked (the official code's number)
        *recall_columns(BEST, "best-epoch "),
        Column("best_epoch", "best epoch (on test)", 1, None, 1),
        *TIMING_COLUMNS,
    )
    console_keys = ("recall@1", "recall@2", "recall@4", "recall@10", "map@r", "nmi",
                    "utilization", "best_recall@1", "best_epoch")
    default_loss = "contrastive"

    def __init__(self, data, ks=(1, 2, 4, 8), nmi_starts: int = NMI_STARTS):
        super().__init__(data)
        self.nmi_starts = nmi_starts
        ks = sorted({int(k) for k in ks})
        if not ks or ks[0] < 1:
            raise ConfigError(f"protocol.ks must be positive integers, got {ks}")
        self.ks = ks

    def check(self, *, loss_fn, method, loss_name, method_name):
        if loss_fn.task != self.name:
            raise ConfigError(f"loss={loss_name} is a {loss_fn.task} loss; retrieval on "
                              f"dataset={self.data.name} trains with a pair or proxy loss: use "
                              f"loss=contrastive, loss=multi_similarity or loss=proxy_anchor "
                              f"(with protocol=retrieval)")
        if self.name not in method.tasks:
            raise ConfigError(f"method={method_name} mixes class targets, which pair losses do "
                              f"not have; retrieval runs take +method=metrix (or no method)")

    def embed(self, model, loader, device, autocast=contextlib.nullcontext, info=SINGLE):
        """Embeddings and labels of a split, on ``device``."""
        embeddings, labels = predict(model, loader, device, autocast, info)
        return embeddings.to(device), labels.to(device)

    def history_metric(self, model, loader, device, autocast=contextlib.nullcontext,
                       info: DistInfo = SINGLE):
        """Recall@K of the test split (unseen classes), every K."""
        embeddings, labels = self.embed(model, loader, device, autocast, info)
        metrics = recall_and_map_at_r(embeddings, labels, self.ks)
        return {f"test_recall@{k}": metrics[f"recall@{k}"] for k in self.ks}

    def evaluate(self, model, val_loader, test_loader, device, *, n_bins,
                 autocast=contextlib.nullcontext, figure_path=None, info=SINGLE,
                 test_labels_clean=None, temperature_split="val"):
        """``val_loader``: the training images without augmentation (utilisation's reference);
        ``test_loader``: the unseen classes."""
        test, labels = self.embed(model, test_loader, device, autocast, info)
        reference, _ = self.embed(model, val_loader, device, autocast, info)
        metrics = retrieval_metrics(test, labels, self.ks, nmi_starts=self.nmi_starts)
        metrics["utilization"] = utilization(test, reference)
        return {"test": metrics}

    @classmethod
    def summary(cls, results):
        test = results["test"]
        recalls = " ".join(f"{k}={v:.4f}" for k, v in test.items() if k.startswith("recall@"))
        return f"{recalls} map@r={test['map@r']:.4f} nmi={test['nmi']:.4f} " \
               f"utilization={test['utilization']:.4f}"
