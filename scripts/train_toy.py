#!/usr/bin/env python
"""Train the tiny ImageWAM of the closed-loop toy task on the CPU and write it in the official release layout.

    python scripts/train_toy.py --out edge/assets/toy_checkpoint          # the shipped checkpoint (~25 min, 1 thread)
    python scripts/train_toy.py --out /tmp/toy_random --random-weights    # the random-weight baseline (same stats/base)
    imagewam-edge eval --checkpoint edge/assets/toy_checkpoint --episodes 100

Deterministic from --seed (one torch thread): the same command on the same torch version writes the same model.pt."""
import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from quantize.train.toy import ToyTrainConfig

    d = ToyTrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="release directory to write")
    p.add_argument("--episodes", type=int, default=d.episodes, help=f"expert episodes (default {d.episodes})")
    p.add_argument("--stride", type=int, default=d.stride, help=f"record every n-th demo step (default {d.stride})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    p.add_argument("--batch", type=int, default=d.batch, help=f"batch size (default {d.batch})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of demos, weights and batches")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (default 1: reproducible)")
    p.add_argument("--vae-steps", type=int, default=d.vae_steps,
                   help=f"autoencoder pretraining steps on the demo scenes (default {d.vae_steps}; 0: random, frozen)")
    p.add_argument("--random-weights", action="store_true", help="write the untrained random-weight baseline")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from quantize.train.toy import train

    cfg = ToyTrainConfig(episodes=a.episodes, stride=a.stride, steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed, threads=a.threads,
                          vae_steps=a.vae_steps)
    summary = train(a.out, cfg, progress=lambda s: print(s, flush=True), random_weights=a.random_weights)
    print(json.dumps({k: summary[k] for k in ("demo_steps", "train_steps", "final_loss", "train_seconds",
                                              "total_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
