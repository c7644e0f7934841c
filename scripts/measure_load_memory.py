"""Peak memory of loading an ImageWAM checkpoint vs its file size (memory-mapped, dtype kept, aliases shared).

    python scripts/measure_load_memory.py [--hidden 768] [--dtype bfloat16]

Writes a random-weight checkpoint in the official layout (backbone 2+4 blocks of `--hidden`), then loads it in a
fresh process and prints the file size, the resident-set growth of the load and the peak RSS over the baseline."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, os
sys.path.insert(0, sys.argv[2])
import torch, psutil
from quantize.model.checkpoint import load_checkpoint
proc = psutil.Process()
base_rss = proc.memory_info().rss
base_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
ckpt = load_checkpoint(sys.argv[1])
after = proc.memory_info().rss
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
n = sum(p.numel() * p.element_size() for p in ckpt.model.parameters())
print(json.dumps({"rss_growth": after - base_rss, "peak_growth": max(0, peak - base_peak), "param_bytes": n,
                  "dtype": str(ckpt.dtype)}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    import torch

    from quantize.demo import demo_stats
    from quantize.model.action_expert import ActionExpertConfig
    from quantize.model.checkpoint import official_state_dict
    from quantize.model.flux2 import Flux2Config
    from quantize.model.mot import ImageWAMFlux2

    heads = args.hidden // 128
    backbone = Flux2Config(hidden=args.hidden, heads=heads, depth_double=2, depth_single=4, context_dim=3 * args.hidden)
    expert = ActionExpertConfig(hidden=args.hidden // 2, heads=heads, head_dim=128, depth_double=2, depth_single=4)
    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        model = ImageWAMFlux2(backbone, expert, 8).to(dtype)
        payload = {**official_state_dict(model), "step": 1, "torch_dtype": f"torch.{args.dtype}"}
        torch.save(payload, Path(tmp) / "model.pt")
        del model, payload
        (Path(tmp) / "dataset_stats.json").write_text(json.dumps(demo_stats(7, 8)))
        size = (Path(tmp) / "model.pt").stat().st_size
        out = subprocess.run([sys.executable, "-c", CHILD, tmp, str(root)], capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    mb = 1 / 2**20
    print(f"checkpoint file   {size * mb:8.1f} MiB ({args.dtype}, backbone hidden {args.hidden}, 2+4 blocks)")
    print(f"parameters        {res['param_bytes'] * mb:8.1f} MiB as loaded ({res['dtype']})")
    print(f"RSS growth        {res['rss_growth'] * mb:8.1f} MiB ({res['rss_growth'] / size:.2f} x file)")
    print(f"peak RSS growth   {res['peak_growth'] * mb:8.1f} MiB ({res['peak_growth'] / size:.2f} x file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
