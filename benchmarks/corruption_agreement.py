"""Compare mixbench's corruptions with the ``imagecorruptions`` package on random 32×32 images.

    python benchmarks/corruption_agreement.py [--images 8] [--severity 3] [--json PATH]

``imagecorruptions`` (``pip install imagecorruptions``) carries ImageNet-C's parameter tables,
not CIFAR-10-C's, so each of our corruptions runs here with the package's own row for the
severity (copied from its source into ``PACKAGE_ROWS``): the same formula at the same numbers.
Two are not comparable that way: the package's elastic transform is ImageNet-C's formula (no
affine step, other parameters), so ours runs at CIFAR-10-C's row; and our frost is a procedural
texture, not the package's photographs.

Per corruption: the mean absolute difference between ours and the package's image (levels of
0-255) and their correlation over all pixels; and, because random corruptions can only agree in
distribution (the package draws from numpy's global generator, ours from a torch.Generator),
the mean and the standard deviation of the change each makes to the clean image.

The package was written for older numpy, scikit-image and setuptools; ``load_package`` bridges
the three names it needs (``pkg_resources``, ``np.float_``, ``gaussian(multichannel=)``)."""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEVERITY_3_ROWS = {  # the package's (ImageNet-C's) severity-3 rows, in our row layout
    "gaussian_noise": (0.18,), "shot_noise": (12,), "impulse_noise": (0.09,),
    "defocus_blur": (6, 0.5), "glass_blur": (1, 2, 3), "motion_blur": (15, 8),
    "zoom_blur": (1.21, 0.02), "snow": (0.55, 0.3, 4, 0.9, 12, 8, 0.7), "frost": (0.7, 0.7),
    "fog": (2.5, 1.7), "brightness": (0.3,), "contrast": (0.2,), "pixelate": (0.4,),
    "jpeg_compression": (15,),
}
PACKAGE_ROWS = {3: SEVERITY_3_ROWS}
SEEDLESS = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"}


def load_package():
    """``imagecorruptions.corrupt``, with the three names it expects from older libraries."""
    if "pkg_resources" not in sys.modules:  # gone from recent setuptools; used for frost files
        shim = types.ModuleType("pkg_resources")
        # a name relative to the folder of the module that asks, as pkg_resources resolves it
        shim.resource_filename = lambda module, name: str(
            Path(sys.modules[module].__file__).parent / name)
        sys.modules["pkg_resources"] = shim
    if not hasattr(np, "float_"):  # removed in numpy 2; its plasma fractal (fog) uses it
        np.float_ = np.float64
    import imagecorruptions
    import imagecorruptions.corruptions as package_corruptions
    from skimage.filters import gaussian

    def gaussian_multichannel(image, sigma, multichannel=False, **kwargs):
        # scikit-image 0.19 renamed multichannel=True to channel_axis=-1
        return gaussian(image, sigma=sigma, channel_axis=-1 if multichannel else None, **kwargs)

    package_corruptions.gaussian = gaussian_multichannel
    return imagecorruptions.corrupt


def random_images(count: int, seed: int) -> np.ndarray:
    """CIFAR-like test images, count×32×32×3 uint8: smooth colour fields with some texture."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 6, 6, generator=g)
    x = F.interpolate(coarse, size=(32, 32), mode="bicubic", align_corners=False)
    x = x + 0.05 * torch.randn(x.shape, generator=g)
    return (x.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def ours_at(images: np.ndarray, name: str, severity: int) -> tuple[np.ndarray, str]:
    """Our corruption of ``images`` (N×H×W×C) at the package's row, or CIFAR-10-C's where the
    package's formula differs; and which row it used."""
    import torch

    from mixbench.shift import PARAMETERS, corrupt_with

    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    if name in PACKAGE_ROWS[severity]:
        row, label = PACKAGE_ROWS[severity][name], "package's"
    else:
        row, label = PARAMETERS[name][severity - 1], "CIFAR-10-C's (formula differs)"
    return corrupt_with(batch, name, row, seed=0).permute(0, 2, 3, 1).numpy(), label


def package_at(images: np.ndarray, name: str, severity: int, corrupt) -> np.ndarray:
    out = []
    for i, image in enumerate(images):
        np.random.seed(i)  # the package draws from numpy's global generator
        out.append(np.asarray(corrupt(image, severity=severity, corruption_name=name),
                              dtype=np.uint8))
    return np.stack(out)


def agreement(clean: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> dict:
    clean, ours, theirs = (a.astype(np.float64) for a in (clean, ours, theirs))
    ours_change, their_change = ours - clean, theirs - clean
    same = ours.std() > 0 and theirs.std() > 0
    return {
        "mad": float(np.abs(ours - theirs).mean()),
        "corr": float(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]) if same else float("nan"),
        "ours_change": float(np.abs(ours_change).mean()),
        "package_change": float(np.abs(their_change).mean()),
        "ours_change_std": float(ours_change.std()),
        "package_change_std": float(their_change.std()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--severity", type=int, default=3, choices=sorted(PACKAGE_ROWS))
    parser.add_argument("--seed", type=int, default=0, help="of the random test images")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    from tabulate import tabulate

    from mixbench.shift import CORRUPTIONS

    package_corrupt = load_package()
    images = random_images(args.images, args.seed)
    rows = []
    for name in CORRUPTIONS:
        ours, row_label = ours_at(images, name, args.severity)
        theirs = package_at(images, name, args.severity, package_corrupt)
        rows.append({"corruption": name, "random": name not in SEEDLESS, "row": row_label,
                     **agreement(images, ours, theirs)})
    print(f"{args.images} random 32×32 images, severity {args.severity}; changes are mean "
          f"|corrupted - clean| and the std of (corrupted - clean), in levels of 0-255\n")
    print(tabulate([[r["corruption"], "yes" if r["random"] else "no", r["mad"], r["corr"],
                     f"{r['ours_change']:.1f} / {r['package_change']:.1f}",
                     f"{r['ours_change_std']:.1f} / {r['package_change_std']:.1f}", r["row"]]
                    for r in rows],
                   headers=["corruption", "random", "|ours - pkg|", "corr", "change ours / pkg",
                            "std ours / pkg", "our row"],
                   floatfmt=".2f", tablefmt="github"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
