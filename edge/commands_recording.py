"""`imagewam-edge recording export`: a recording (`run --record DIR`) as a LeRobot v3 dataset. lerobot is imported
inside the handler (workstation side)."""
from __future__ import annotations

import sys

from .cli_util import command, emit_json, group


def register(sub) -> None:
    _, rsub = group(sub, "recording", "recordings made by `run --record`: export",
                    "imagewam-edge recording export recordings/day1 --format lerobot --out datasets/day1",
                    dest="recording_command",
                    description="Work with observation recordings (`imagewam-edge run --record DIR`).")
    p = command(rsub, "export", "write a recording as a LeRobot v3 dataset (Parquet + MP4)",
                ["imagewam-edge recording export recordings/day1 --format lerobot --out datasets/day1",
                 "imagewam-edge recording export recordings/day1 --format lerobot --out datasets/day1 --images "
                 "--mapping keys.yaml --fps 10"], recording_export, json=True,
                description="Export a recording as a LeRobotDataset v3 through lerobot's own dataset API (needs "
                            "`pip install 'imagewam-edge[lerobot]'`). Keys: observation.state, action (the command "
                            "sent), observation.images.<camera slot>; the task is the instruction. `quantize "
                            "--calibration OUT` reads the dataset back.")
    p.add_argument("recording", help="recording directory (session.json + episode_*/)")
    p.add_argument("--format", required=True, choices=("lerobot",), help="output format")
    p.add_argument("--out", required=True, help="output dataset directory (replaced atomically)")
    p.add_argument("--repo-id", help="LeRobot repo id stored in the dataset (default: local/<out name>)")
    p.add_argument("--fps", type=int, help="frame rate (default: from the recorded step times)")
    p.add_argument("--mapping", help="JSON/YAML with state/action/cameras LeRobot key names")
    p.add_argument("--images", action="store_true", help="store frames as PNG images (lossless) instead of MP4 video")


def recording_export(args) -> int:
    from .recording_lerobot import LeRobotMapping, export_lerobot

    mapping = LeRobotMapping.load(args.mapping) if args.mapping else None
    if not args.json:  # --json: the one JSON object, no progress
        print(f"exporting {args.recording} as a LeRobot dataset ...", file=sys.stderr, flush=True)
    out = export_lerobot(args.recording, args.out, repo_id=args.repo_id, fps=args.fps, mapping=mapping,
                         video=not args.images)
    if args.json:
        emit_json(out)
    else:
        print(f"{out['out']}: LeRobot v3 dataset {out['repo_id']}, {out['episodes']} episode(s), {out['frames']} "
              f"frames at {out['fps']} fps; features {', '.join(out['features'])}")
    return 0
