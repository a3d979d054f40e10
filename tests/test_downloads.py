"""Fetching what a run needs: Fashion-MNIST through torchvision with dataset.download=true,
one process per machine under DDP, and timm's pretrained weights from a local file."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import ROOT
from mixbench.components import BACKBONES, DATASETS
from mixbench.errors import ConfigError, DatasetNotFoundError
from test_data import fake_fashion


class FakeFashionMNIST:
    """Stands for torchvision's downloader: writes the idx files where it puts them."""
    calls = []

    def __init__(self, root, train=True, download=False):
        FakeFashionMNIST.calls.append((root, download))
        folder = Path(root) / "FashionMNIST" / "raw"
        folder.mkdir(parents=True, exist_ok=True)
        fake_fashion(folder, gz=False)


@pytest.fixture
def fake_torchvision(monkeypatch):
    FakeFashionMNIST.calls = []
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    return FakeFashionMNIST.calls


def test_fashion_mnist_downloads_into_root_when_asked(tmp_path, fake_torchvision):
    with pytest.raises(DatasetNotFoundError, match="dataset.download=true"):
        DATASETS.build({"name": "fashion_mnist", "root": str(tmp_path), "val_size": 10})
    assert fake_torchvision == []  # nothing is fetched unless asked
    data = DATASETS.build({"name": "fashion_mnist", "root": str(tmp_path), "val_size": 10,
                           "download": True})
    assert fake_torchvision == [(str(tmp_path), True)]
    assert (len(data.train), len(data.val), len(data.test)) == (50, 10, 20)
    # the files are there now: a second build reads them and fetches nothing
    DATASETS.build({"name": "fashion_mnist", "root": str(tmp_path), "val_size": 10,
                    "download": True})
    assert len(fake_torchvision) == 1


RANKS = textwrap.dedent("""
    import os, sys, pathlib
    import torch.distributed as dist
    from mixbench.data.downloads import download_once
    from mixbench.engine.distributed import spawn

    def fetch(folder):
        # O_EXCL: a second writer would fail here
        fd = os.open(folder / "fetched", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(dist.get_rank()).encode())
        os.close(fd)

    def rank(info, folder):
        dist.init_process_group("gloo", rank=info.rank, world_size=info.world_size)
        download_once(lambda: fetch(folder))
        # every rank sees the file once download_once returns
        (folder / f"saw_{info.rank}").write_text((folder / "fetched").read_text())
        dist.destroy_process_group()

    if __name__ == "__main__":
        spawn(rank, 2, pathlib.Path(sys.argv[1]))
""")


@pytest.mark.slow
def test_under_ddp_one_process_downloads_and_the_other_waits(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "fetched").read_text() == "0"
    assert (tmp_path / "saw_0").read_text() == (tmp_path / "saw_1").read_text() == "0"


def test_timm_pretrained_weights_load_from_a_local_file(tmp_path):
    import timm

    source = timm.create_model("resnet10t", num_classes=1000)
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    model = BACKBONES.build({"name": "timm", "model_name": "resnet10t", "pretrained": True,
                             "pretrained_file": str(path)}, num_classes=7)
    loaded = model.model.state_dict()
    body = [k for k in loaded if not k.startswith("fc.")]
    assert body and all(torch.equal(loaded[k], source.state_dict()[k]) for k in body)
    assert loaded["fc.weight"].shape == (7, source.num_features)  # a fresh 7-class head
    fresh = BACKBONES.build({"name": "timm", "model_name": "resnet10t"}, num_classes=7)
    assert not torch.equal(fresh.model.state_dict()["conv1.0.weight"],
                           source.state_dict()["conv1.0.weight"])


@pytest.mark.parametrize("options, message", [
    ({"pretrained_file": "w.pth"}, "only with backbone.pretrained=true"),
    ({"pretrained": True, "pretrained_file": "/nowhere/w.pth"}, "does not exist"),
    ({"pretrained": True, "checkpoint": "w.pt"}, "choose one"),
])
def test_pretrained_mistakes_name_the_fix(options, message):
    with pytest.raises(ConfigError, match=message):
        BACKBONES.build({"name": "timm", "model_name": "resnet10t", **options}, num_classes=3)
