"""Draw what a trained run's learned mixing policy does: sources, masks, mixed samples.

    python tools/visualize_mix.py RUN_DIR [--out FILE] [--n 8] [--seed 0] [--device cpu]

RUN_DIR is a run folder holding last.pt, trained with a learned policy (automix, samix,
adautomix, adamixup); its generator (and EMA copy) are restored from the checkpoint and applied
to the first N test images. The figure goes to RUN_DIR/mixing.png unless --out says otherwise.
Runs of methods without a learned policy are refused with a message naming those that have
one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixbench.errors import MixbenchError  # noqa: E402
from mixbench.methods.policy.preview import preview_run, save_preview_grid  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder holding last.pt")
    parser.add_argument("--out", type=Path, help="the image file (default RUN_DIR/mixing.png)")
    parser.add_argument("--n", type=int, default=8, help="mixed samples to draw (rows)")
    parser.add_argument("--seed", type=int, default=0, help="seed of λ and the pairings")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    try:
        preview, name = preview_run(args.run_dir, n=args.n, device=args.device, seed=args.seed)
    except MixbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = save_preview_grid(preview, args.out or args.run_dir / "mixing.png",
                            title=f"{name}: {args.run_dir.name}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
