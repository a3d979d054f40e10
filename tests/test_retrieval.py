"""Metric learning: retrieval metrics against brute force and pytorch-metric-learning, the
Metrix losses against PML's plain losses, the class split, the readers of CUB / Cars / SOP on
tiny files written in their layouts, and 1-epoch runs of every loss and Metrix mode on
digits."""
import itertools
import json

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

from mixbench.eval.retrieval import (NMI_STARTS, kmeans, nearest_neighbors, nmi,
                                     recall_and_map_at_r, retrieval_metrics, utilization)


def brute_force(embeddings: np.ndarray, labels: np.ndarray, ks):
    """The definitions, one query at a time: the others sorted by (squared distance, index)."""
    n = len(labels)
    recalls, aps = {k: 0 for k in ks}, []
    for q in range(n):
        d = ((embeddings - embeddings[q]) ** 2).sum(1)
        order = sorted((j for j in range(n) if j != q), key=lambda j: (d[j], j))
        same = [labels[j] == labels[q] for j in order]
        for k in ks:
            recalls[k] += any(same[:k])
        r = sum(same)
        if r:
            precision_sum, found = 0.0, 0
            for i in range(r):
                if same[i]:
                    found += 1
                    precision_sum += found / (i + 1)
            aps.append(precision_sum / r)
    return {**{f"recall@{k}": recalls[k] / n for k in ks}, "map@r": float(np.mean(aps))}


@pytest.mark.parametrize("kind", ["continuous", "integer_ties"])
def test_recall_and_map_at_r_equal_brute_force(kind):
    rng = np.random.RandomState(0)
    if kind == "continuous":
        x = rng.randn(60, 5).astype(np.float32)
    else:  # small integers: exact distances, many ties
        x = rng.randint(0, 3, size=(60, 3)).astype(np.float32)
    labels = rng.randint(0, 4, size=60)
    labels[0] = 9  # a class of one: its MAP@R is not defined and it is left out
    ks = (1, 2, 4, 8, 100)
    ours = recall_and_map_at_r(torch.tensor(x), torch.tensor(labels), ks)
    expected = brute_force(x.astype(np.float64), labels, ks)
    assert ours == pytest.approx(expected, abs=1e-12)
    assert ours["recall@100"] == pytest.approx(1 - 1 / 60)  # K above N-1: every other item


def test_chunked_search_equals_unchunked():
    rng = np.random.RandomState(1)
    x = torch.tensor(rng.randint(0, 4, size=(300, 4)), dtype=torch.float32)
    labels = torch.tensor(rng.randint(0, 6, size=300))
    whole = nearest_neighbors(x, x, 20, exclude_self=True, chunk_bytes=2**40)
    for chunk_bytes in (1, 300 * 32 * 7):  # one row at a time, 7 rows at a time
        chunked = nearest_neighbors(x, x, 20, exclude_self=True, chunk_bytes=chunk_bytes)
        assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
        # the same neighbours; MAP@R sums them in another order
        assert recall_and_map_at_r(x, labels, (1, 4), chunk_bytes=chunk_bytes) == \
            pytest.approx(recall_and_map_at_r(x, labels, (1, 4)), rel=1e-12)
    # ties go to the lower index, self excluded
    same = torch.zeros(5, 2)
    assert nearest_neighbors(same, same, 4, exclude_self=True)[1][2].tolist() == [0, 1, 3, 4]
    assert nearest_neighbors(same, same, 1, exclude_self=True)[1].flatten().tolist() == \
        [1, 0, 0, 0, 0]


def test_map_at_r_and_nmi_agree_with_pml_accuracy_calculator():
    rng = np.random.RandomState(2)
    centers = rng.randn(5, 8) * 3
    labels = np.repeat(np.arange(5), 30)
    x = torch.tensor(centers[labels] + rng.randn(150, 8), dtype=torch.float32)
    y = torch.tensor(labels)
    calc = AccuracyCalculator(include=("mean_average_precision_at_r", "precision_at_1", "NMI"),
                              k="max_bin_count",
                              knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
                              kmeans_func=lambda e, c: kmeans(e, c, seed=0,
                                                              starts=NMI_STARTS))
    pml = calc.get_accuracy(x, y, ref_includes_query=True)
    ours = retrieval_metrics(x, y, ks=(1, 2))
    assert ours["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)
    assert ours["recall@1"] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert ours["nmi"] == pytest.approx(pml["NMI"], abs=1e-9)
    assert set(ours) == {"recall@1", "recall@2", "map@r", "nmi"}


def test_nmi_is_one_for_separated_classes_and_kmeans_is_seeded():
    x = torch.cat([torch.randn(20, 4) * 0.01 + 10 * torch.eye(4)[c] for c in range(4)])
    labels = torch.arange(4).repeat_interleave(20)
    assert nmi(x, labels) == pytest.approx(1.0)
    assert torch.equal(kmeans(x, 4, seed=3), kmeans(x, 4, seed=3))
    with pytest.raises(ValueError, match="clusters"):
        kmeans(x, 0)


def _inertia(x, assign):
    """Sum of squared distances of the rows to their cluster's mean."""
    return sum(((x[assign == c] - x[assign == c].mean(0)) ** 2).sum().item()
               for c in assign.unique())


def test_several_kmeans_starts_keep_the_lowest_inertia_and_steady_nmi():
    """Six overlapping blobs, where single k-means++ starts land in different local optima:
    the best of ten starts is never worse than the first start alone (the same draw), better
    on average over seeds, and its NMI spreads less over k-means seeds."""
    rng = np.random.RandomState(0)
    labels = np.repeat(np.arange(6), 40)
    x = torch.tensor((rng.randn(6, 4) * 2)[labels] + rng.randn(240, 4), dtype=torch.float32)
    y = torch.tensor(labels)
    one = [_inertia(x, kmeans(x, 6, seed=s, starts=1)) for s in range(10)]
    ten = [_inertia(x, kmeans(x, 6, seed=s, starts=10)) for s in range(10)]
    assert all(t <= o + 1e-3 for t, o in zip(ten, one))
    assert np.mean(ten) < np.mean(one) - 10
    spread = {n: np.std([nmi(x, y, seed=s, starts=n) for s in range(10)]) for n in (1, 10)}
    assert spread[10] < spread[1] / 1.5
    assert torch.equal(kmeans(x, 6, seed=4, starts=10), kmeans(x, 6, seed=4, starts=10))
    with pytest.raises(ValueError, match="at least one start"):
        kmeans(x, 6, starts=0)


def test_utilization_is_the_mean_squared_distance_to_the_nearest_reference():
    reference = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    query = torch.tensor([[0.0, 2.0], [0.9, 0.0], [0.5, 0.0]])
    assert utilization(query, reference, chunk_bytes=1) == pytest.approx((4 + 0.01 + 0.25) / 3)


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="N×d"):
        retrieval_metrics(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbors(torch.zeros(3, 2), torch.zeros(3, 2), 3, exclude_self=True)


# --- losses --------------------------------------------------------------------------------

from mixbench.components import LOSSES, METHODS  # noqa: E402
from mixbench.losses.pair import MixedPairs  # noqa: E402


def all_pairs(anchors: int, examples: torch.Tensor, classes: torch.Tensor, lam=0.3):
    """Every (anchor, example) pair as "mixed" pairs of an example with itself: v is 1 where
    the classes agree and 0 elsewhere, whatever λ."""
    return MixedPairs(examples.repeat(anchors, 1), torch.arange(anchors).repeat_interleave(
        len(examples)), classes.repeat(anchors), classes.repeat(anchors), lam)


def loss_batch(seed=0, n=12, refs=9, dim=6, classes=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=1)
    u = torch.nn.functional.normalize(torch.randn(refs, dim, generator=gen), dim=1)
    return (x, torch.randint(0, classes, (n,), generator=gen), u,
            torch.randint(0, classes, (refs,), generator=gen))


@pytest.mark.parametrize("same_class", [False, True])
def test_metrix_contrastive_and_ms_with_binary_v_equal_pmls_plain_losses(same_class):
    x, y, u, yu = loss_batch()
    if same_class:  # v = 1 for every mixed example
        y, yu = torch.zeros_like(y), torch.zeros_like(yu)
    contrastive = LOSSES.build({"name": "contrastive"})
    plain = pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=0.5,
                                       distance=LpDistance())(x, y, ref_emb=u, ref_labels=yu)
    assert contrastive.mixed(x, y, all_pairs(len(x), u, yu)) == pytest.approx(plain.item(),
                                                                              rel=1e-5)
    ms = LOSSES.build({"name": "multi_similarity", "miner_epsilon": None})
    plain = pml_losses.MultiSimilarityLoss(2, 50, 0.5)(x, y, ref_emb=u, ref_labels=yu)
    assert ms.mixed(x, y, all_pairs(len(x), u, yu)) == pytest.approx(plain.item(), rel=1e-5)
    # the plain forms are PML's (MS without its miner here)
    assert ms(x, y).item() == pytest.approx(pml_losses.MultiSimilarityLoss(2, 50, 0.5)(x, y)
                                            .item())


@pytest.mark.parametrize("same_class", [False, True])
def test_metrix_proxy_anchor_with_binary_v_equals_pmls(same_class):
    _, _, u, yu = loss_batch(refs=10, classes=4)
    if same_class:
        yu = torch.full_like(yu, 2)
    loss = LOSSES.build({"name": "proxy_anchor"}, num_classes=4, embedding_dim=6)
    pairs = MixedPairs(u, torch.zeros(10, dtype=torch.long), yu, yu, 0.7)
    assert loss.mixed(u, yu, pairs).item() == pytest.approx(loss(u, yu).item(), rel=1e-5)
    assert loss.lr_multiplier == 100.0 and len(list(loss.parameters())) == 1


def test_fractional_v_weighs_the_positive_and_negative_terms():
    a = torch.tensor([[1.0, 0.0]])
    u = torch.tensor([[0.96, 0.28]])  # unit vectors: distance sqrt(0.08), cosine 0.96
    pairs = MixedPairs(u, torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), 0.3)
    d = 0.08 ** 0.5  # v = 0.3: 0.3·d (positive) + 0.7·(0.5 − d) (negative)
    contrastive = LOSSES.build({"name": "contrastive"})
    assert contrastive.mixed(a, torch.tensor([0]), pairs).item() == pytest.approx(
        0.3 * d + 0.7 * (0.5 - d), rel=1e-5)
    ms = LOSSES.build({"name": "multi_similarity"})
    expected = (np.log(1 + 0.3 * np.exp(-2 * (0.96 - 0.5))) / 2
                + np.log(1 + 0.7 * np.exp(50 * (0.96 - 0.5))) / 50)
    assert ms.mixed(a, torch.tensor([0]), pairs).item() == pytest.approx(expected, rel=1e-5)
    # anchor of class 1: v = 1 − λ
    assert pairs.positiveness(torch.tensor([1])).item() == pytest.approx(0.7)


def test_loss_options_are_checked():
    from mixbench.errors import ConfigError

    with pytest.raises(ConfigError, match="neg_margin"):
        LOSSES.build({"name": "contrastive", "neg_margin": 0.0})
    with pytest.raises(ConfigError, match="protocol=retrieval"):
        LOSSES.build({"name": "proxy_anchor"})(torch.zeros(2, 3), torch.zeros(2).long())
    with pytest.raises(ValueError, match="class indices"):
        LOSSES.build({"name": "contrastive"})(torch.zeros(2, 3), torch.zeros(2))


# --- data: split by class, m per class, the published layouts ------------------------------

from conftest import make_cfg  # noqa: E402
from PIL import Image  # noqa: E402

from mixbench.components import DATASETS  # noqa: E402
from mixbench.data.retrieval import (MPerClassBatches, MPerClassLoader,  # noqa: E402
                                     split_by_class)
from mixbench.engine.distributed import DistInfo  # noqa: E402
from mixbench.app.train import train  # noqa: E402
from mixbench.errors import ConfigError, DatasetNotFoundError  # noqa: E402


def digits():
    data = DATASETS.build({"name": "digits"})
    data.name = "digits"
    return data


@pytest.mark.parametrize("train_classes", [None, [1, 3, 8]])
def test_split_by_class_keeps_training_and_test_classes_apart(train_classes):
    data = digits()
    split = split_by_class(data, train_classes)
    chosen = train_classes or [0, 1, 2, 3, 4]
    unseen = [c for c in range(10) if c not in chosen]
    pool_y = torch.cat([data.train.y, data.val.y])
    in_train = torch.isin(pool_y, torch.tensor(chosen))
    assert split.task == "retrieval" and split.num_classes == len(chosen)
    assert len(split.train) == int(in_train.sum()) and split.val is split.train
    assert len(split.test) == int(torch.isin(data.test.y, torch.tensor(unseen)).sum())
    # relabelled 0..K-1 in class order: each training label maps back to its class
    assert torch.equal(torch.tensor(chosen)[split.train.y], pool_y[in_train])
    test_rows = torch.isin(data.test.y, torch.tensor(unseen))
    assert torch.equal(torch.tensor(unseen)[split.test.y], data.test.y[test_rows])
    assert torch.equal(split.test.x, data.test.x[test_rows])  # never a training image


def test_a_split_without_two_classes_on_each_side_says_how_to_fix_it():
    with pytest.raises(ConfigError, match="at least 2 training and 2 test classes"):
        split_by_class(digits(), [0, 1, 2, 3, 4, 5, 6, 7, 8])
    with pytest.raises(ConfigError, match=r"train_classes=\[12\] are not classes"):
        split_by_class(digits(), [1, 12])


def test_batches_hold_m_images_of_each_class_and_ranks_take_whole_classes():
    data = split_by_class(digits())
    np.random.seed(0)
    loader = MPerClassLoader(data.train, 20, 5, device="cpu", mean=data.mean, std=data.std,
                             augment=None)
    batches = [y for _, y, _ in loader]
    assert len(batches) == len(data.train) // 20
    for y in batches:
        assert sorted(torch.bincount(y, minlength=5).tolist()) == [0, 5, 5, 5, 5]
    ranks = []
    for rank in range(2):
        np.random.seed(0)  # the trainer seeds every rank alike each epoch
        sampler = MPerClassBatches(data.train.y, 5, 20, DistInfo(rank, 2))
        ranks.append(list(sampler))
    np.random.seed(0)
    whole = list(MPerClassBatches(data.train.y, 5, 20))
    for first, second, both in zip(*ranks, whole):
        assert first + second == both
        for part in (first, second):
            assert sorted(torch.bincount(data.train.y[part], minlength=5).tolist()) == \
                [0, 0, 0, 5, 5]
    with pytest.raises(ConfigError, match="multiple of protocol.m_per_class"):
        MPerClassBatches(data.train.y, 10, 20, DistInfo(0, 4))
    with pytest.raises(ConfigError, match="needs 10 classes"):
        MPerClassBatches(data.train.y, 5, 50)


def write_jpeg(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (value, value, value)).save(path)


def test_cub_reader_splits_classes_1_to_100_from_101_to_200(tmp_path):
    root = tmp_path / "CUB_200_2011"
    images, labels = [], []
    for i, cls in enumerate([1, 1, 2, 2, 100, 101, 101, 150, 150, 200], start=1):
        name = f"{cls:03d}.Bird_{cls}/img_{i}.jpg"
        write_jpeg(root / "images" / name, i)
        images.append(f"{i} {name}")
        labels.append(f"{i} {cls}")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    data = DATASETS.build({"name": "cub200", "root": str(tmp_path), "image_size": 8})
    assert data.task == "retrieval" and data.num_classes == 3
    assert data.train.targets == [0, 0, 1, 1, 2] and data.test.targets == [0, 0, 1, 1, 2]
    assert data.test.samples[0][0].endswith("101.Bird_101/img_6.jpg")
    x, y = data.test[4]
    assert x.shape == (3, 8, 8) and y == 2
    with pytest.raises(DatasetNotFoundError, match="dataset.root"):
        DATASETS.build({"name": "cub200"})


def test_cars_reader_uses_classes_not_the_test_flag(tmp_path):
    from scipy.io import savemat

    rows = []
    for i, (cls, flag) in enumerate([(1, 0), (1, 1), (98, 0), (99, 1), (99, 0), (196, 0)]):
        rel = f"car_ims/{i:06d}.jpg"
        write_jpeg(tmp_path / rel, 10 * i)
        rows.append((rel, 0, 0, 5, 5, cls, flag))
    table = np.array(rows, dtype=[("relative_im_path", object), ("bbox_x1", int),
                                  ("bbox_y1", int), ("bbox_x2", int), ("bbox_y2", int),
                                  ("class", int), ("test", int)])
    savemat(tmp_path / "cars_annos.mat", {"annotations": table[None, :]})
    data = DATASETS.build({"name": "cars196", "root": str(tmp_path), "image_size": 8})
    assert data.train.targets == [0, 0, 1] and data.test.targets == [0, 0, 1]
    assert [p.split("/")[-1] for p, _ in data.test.samples] == ["000003.jpg", "000004.jpg",
                                                                "000005.jpg"]


def test_sop_reader_takes_its_train_and_test_files(tmp_path):
    for which, classes in (("train", [1, 1, 7, 7]), ("test", [11319, 11319, 11320, 11320])):
        lines = ["image_id class_id super_class_id path"]
        for i, cls in enumerate(classes):
            rel = f"bicycle_final/{which}_{i}.JPG"
            write_jpeg(tmp_path / rel, i)
            lines.append(f"{i + 1} {cls} 1 {rel}")
        (tmp_path / f"Ebay_{which}.txt").write_text("\n".join(lines) + "\n")
    data = DATASETS.build({"name": "sop", "root": str(tmp_path), "image_size": 8})
    assert data.num_classes == 2 and data.train.targets == [0, 0, 1, 1]
    assert data.test.targets == [0, 0, 1, 1] and data.test.samples[2][0].endswith("test_2.JPG")


# --- runs ------------------------------------------------------------------------------------

QUICK = ["protocol=retrieval", "trainer.epochs=1", "trainer.progress=false",
         "protocol.embedding_dim=16", "backbone.width=8"]


@pytest.mark.parametrize("mode,loss", list(itertools.product(
    ["input", "feature", "embed"], ["contrastive", "multi_similarity", "proxy_anchor"])))
def test_one_epoch_of_each_metrix_mode_and_loss_on_digits(mode, loss, tmp_path):
    results = train(make_cfg(*QUICK, "+method=metrix", f"method.mode={mode}", f"loss={loss}"),
                    tmp_path)
    assert results["status"] == "completed" and results["protocol"] == "retrieval"
    assert results["task"] == "retrieval"
    assert set(results["test"]) == {"recall@1", "recall@2", "recall@4", "recall@8", "map@r",
                                    "nmi", "utilization"}
    assert 0 < results["test"]["recall@1"] <= results["test"]["recall@8"] <= 1
    section = results["retrieval"]
    assert section["train_classes"] == 5 and section["test_classes"] == 5
    assert section["best_epoch"] == 1 and section["selected_on"] == "test"
    assert section["best_recall@1"] == results["test"]["recall@1"]  # one epoch: the same


def test_warm_up_trains_only_the_embedding_and_frozen_bn_keeps_its_statistics(tmp_path):
    cfg = make_cfg(*QUICK, "protocol.warmup_epochs=1", "protocol.freeze_bn=true",
                   "loss=proxy_anchor", "protocol.ks=[1,10]")
    results = train(cfg, tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    from mixbench.components import BACKBONES

    torch.manual_seed(cfg.seed)
    fresh = BACKBONES.build({"name": "small_cnn", "width": 8}, num_classes=5).state_dict()
    body = {k[len("backbone."):]: v for k, v in state["model"].items()
            if k.startswith("backbone.")}
    assert body and all(torch.equal(v, fresh[k]) for k, v in body.items())  # nothing moved
    assert "loss" in state and state["loss"]["pml.proxies"].shape == (5, 16)
    assert set(results["retrieval"]) >= {"best_recall@1", "best_recall@10"}


def test_retrieval_runs_refuse_what_does_not_fit_with_the_fix(tmp_path):
    cases = {
        ("loss=soft_ce",): "use loss=contrastive, loss=multi_similarity or loss=proxy_anchor",
        ("+method=mixup",): "retrieval runs take \\+method=metrix",
        ("+method=metrix", "method.mode=inptu"): "method.mode must be one of input, feature",
        ("trainer.batch_size=60",): "needs 6 classes; the training split has 5",
        ("trainer.init_from=somewhere",): "backbone.checkpoint=PATH",
        ("protocol.nmi_starts=0",): "protocol.nmi_starts must be a positive integer",
    }
    for overrides, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            train(make_cfg(*QUICK, *overrides), tmp_path / str(len(message)))
    with pytest.raises(ConfigError, match="retrieval losses train with protocol=retrieval"):
        train(make_cfg("trainer.epochs=1", "loss=contrastive"), tmp_path / "standard")
    with pytest.raises(ConfigError, match="run it with protocol=retrieval"):
        train(make_cfg("trainer.epochs=1", "+method=metrix"), tmp_path / "metrix")
    with pytest.raises(ConfigError, match="needs a classification dataset"):
        train(make_cfg(*QUICK, "dataset=diabetes", "backbone=small_cnn"), tmp_path / "reg")


def test_leaderboard_has_a_retrieval_table_with_modes_apart_and_the_published_r1(tmp_path):
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "tools"))
    import leaderboard

    runs = tmp_path / "runs"
    for name, overrides in {"erm": [], "input": ["+method=metrix", "method.mode=input"],
                            "embed": ["+method=metrix", "method.mode=embed"]}.items():
        train(make_cfg(*QUICK, *overrides), runs / name)
    reference = tmp_path / "published.csv"
    reference.write_text("dataset,method,method.mode,loss,recall@1\n"
                         "digits,erm,,contrastive,50.0\ndigits,metrix,embed,contrastive,60.0\n")
    assert leaderboard.main([str(runs), "--compare-to", str(reference)]) == 0
    text = (runs / "leaderboard.md").read_text()
    assert "## retrieval · retrieval" in text and "method.mode" in text
    table = json.loads(pd_table(runs / "leaderboard.csv"))
    by_mode = {row["method.mode"]: row for row in table}
    assert set(by_mode) == {None, "input", "embed"}  # three rows: the modes are not averaged
    assert by_mode[None]["ref_recall@1"] == pytest.approx(0.5)
    assert by_mode["embed"]["ref_recall@1"] == pytest.approx(0.6)
    assert by_mode["input"]["ref_recall@1"] is None
    assert by_mode["embed"]["best_recall@1"] == by_mode["embed"]["recall@1"]
    from mixbench.engine.load import load_run
    from mixbench.errors import ConfigError

    with pytest.raises(ConfigError, match="protocol=retrieval run"):  # not a misleading loss error
        load_run(runs / "erm", "cpu")


def pd_table(path) -> str:
    import pandas as pd

    return pd.read_csv(path).to_json(orient="records")


def test_metrix_pairs_follow_the_official_code():
    from mixbench.methods.metrix import metrix_triplets

    labels = torch.tensor([0, 1, 0, 2, 1, 3])  # 0, 2 and 4 have positives; 3 and 5 do not
    anchor, i, j = metrix_triplets(labels, 0)
    # each anchor with a positive: its first positive, every negative
    assert sorted(set(anchor.tolist())) == [0, 1, 2, 4]
    assert all(labels[a] == labels[p] and a != p for a, p in zip(anchor, i))
    assert all(labels[a] != labels[n] for a, n in zip(anchor, j))
    assert len(anchor) == 4 * 4 and i[anchor == 0].unique().tolist() == [2]
    anchor, i, j = metrix_triplets(labels, 1)  # anchor-negative: anchors without a positive
    assert sorted(set(anchor.tolist())) == [3, 5] and torch.equal(anchor, i)
    # input mode: only the closest negative
    embeddings = torch.tensor([[0.0], [5.0], [0.1], [0.3], [9.0], [7.0]])
    anchor, i, j = metrix_triplets(labels, 0, embeddings)
    assert dict(zip(anchor.tolist(), j.tolist())) == {0: 3, 1: 5, 2: 3, 4: 5}
    method = METHODS.build({"name": "metrix", "mode": "embed", "pairing": "anchor_negative"},
                           num_classes=4)
    assert method.pairing == "anchor_negative"
    with pytest.raises(ConfigError, match="method.pairing must be one of"):
        METHODS.build({"name": "metrix", "pairing": "both"}, num_classes=4)


def test_presets_compose_into_retrieval_runs(tmp_path):
    cfg = make_cfg("experiment=cub200_r50_metrix_ms", "dataset.root=" + str(tmp_path / "none"))
    assert cfg.protocol.name == "retrieval" and cfg.method.name == "metrix"
    assert cfg.loss.name == "multi_similarity" and cfg.protocol.embedding_dim == 512
    assert cfg.protocol.freeze_bn and cfg.backbone.model_name == "resnet50"
    with pytest.raises(DatasetNotFoundError, match="is not a folder"):
        train(cfg, tmp_path / "run")
    fashion = make_cfg("experiment=metrix_fashion_mnist", "loss=multi_similarity")
    assert fashion.protocol.name == "retrieval" and fashion.dataset.name == "fashion_mnist"
    assert fashion.loss.name == "multi_similarity" and fashion.optimizer.lr == 1e-3
    sop = make_cfg("dataset=sop", "protocol=retrieval")
    assert sop.protocol.name == "retrieval" and sop.loss.name == "contrastive"
    sop = make_cfg("experiment=sop_r50_metrix_ms")
    assert sop.protocol.ks == [1, 10, 100, 1000] and sop.optimizer.lr == 6e-4
    assert sop.scheduler.gamma == 0.25 and sop.protocol.warmup_epochs == 1
    cars = make_cfg("experiment=cars196_r50_metrix_ms")
    assert cars.dataset.name == "cars196" and cars.trainer.epochs == 60


@pytest.mark.parametrize("pooling", ["avg", "avg+max"])
def test_feature_mixing_equals_mixing_the_last_feature_maps(pooling):
    from mixbench.components import BACKBONES
    from mixbench.models.embedding import EmbeddingNet

    model = EmbeddingNet(BACKBONES.build({"name": "small_cnn", "width": 4}, num_classes=3), 6,
                         pooling=pooling).eval()
    x = torch.randn(5, 1, 8, 8)
    i, j, lam = torch.tensor([0, 1, 4]), torch.tensor([2, 3, 3]), 0.3
    out = model(x, mix=lambda h: torch.lerp(h[j], h[i], lam))
    maps = model.feature_map(x)
    mixed = lam * maps[i] + (1 - lam) * maps[j]  # the definition: mix, then pool and embed
    assert out.shape == (8, 6)
    assert torch.allclose(out[:5], model(x), atol=1e-6)
    assert torch.allclose(out[5:], model.embed(model.pool(mixed)), atol=1e-5)
    assert torch.allclose(out.norm(dim=1), torch.ones(8))


def test_kill_and_resume_after_warm_up_gives_the_same_final_numbers(tmp_path, monkeypatch):
    from conftest import kill_in_epoch_two, without_timings

    overrides = [*QUICK, "trainer.epochs=2", "protocol.warmup_epochs=1", "loss=proxy_anchor",
                 "+method=metrix", "method.mode=embed"]
    full = train(make_cfg(*overrides), tmp_path / "full")
    kill_in_epoch_two(make_cfg(*overrides), tmp_path / "killed", monkeypatch)
    resumed = train(make_cfg(*overrides, "trainer.resume=true"), tmp_path / "killed")
    assert resumed["test"] == full["test"]
    assert without_timings(resumed["history"]) == without_timings(full["history"])
    assert resumed["retrieval"] == full["retrieval"]


def test_a_timm_backbone_embeds_from_its_feature_map_and_loads_another_heads_weights(tmp_path):
    from mixbench.components import BACKBONES
    from mixbench.models.embedding import EmbeddingNet

    other = BACKBONES.build({"name": "timm", "model_name": "resnet10t"}, num_classes=7)
    torch.save(other.model.state_dict(), tmp_path / "weights.pt")
    backbone = BACKBONES.build({"name": "timm", "model_name": "resnet10t",
                                "checkpoint": str(tmp_path / "weights.pt")}, num_classes=5)
    body = {k: v for k, v in other.model.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(backbone.model.state_dict()[k], v) for k, v in body.items())
    model = EmbeddingNet(backbone, 8, pooling="avg+max", freeze_bn=True).train()
    assert all(not m.training for m in model.batch_norms())
    out = model(torch.randn(3, 3, 32, 32), mix=lambda h: torch.lerp(h[[1]], h[[0]], 0.5))
    assert out.shape == (4, 8)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="does not fit this model"):
        BACKBONES.build({"name": "timm", "model_name": "resnet10t",
                         "checkpoint": str(tmp_path / "bad.pt")}, num_classes=5)


@pytest.mark.slow  # three processes import torch
def test_the_retrieval_benchmark_runs_end_to_end_and_both_sides_agree():
    from conftest import run_tool

    out = run_tool("benchmarks/retrieval.py", "metrics", "--n", "300", "--dim", "8")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    ours, pml = (next(r for r in rows if r["impl"] == impl) for impl in ("ours", "pml"))
    assert ours["metrics"]["map@r"] == pml["metrics"]["mean_average_precision_at_r"]
    assert ours["metrics"]["recall@1"] == pml["metrics"]["precision_at_1"]
    out = run_tool("benchmarks/retrieval.py", "step", "--repeats", "1", "--batch", "20",
                   "--m", "5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("| contrastive |") == 4 and "| multi_similarity | feature |" in \
        out.stdout
