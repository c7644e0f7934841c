"""`imagewam-edge camera ...` and `imagewam-edge arm ...`. SDKs are imported inside the handlers."""
from __future__ import annotations

import sys
import time

from edge.cli_util import command, emit_json, group


def register(sub) -> None:
    _, csub = group(sub, "camera", "RealSense cameras and recordings",
                    ["imagewam-edge camera info recording.db3 --json",
                     "imagewam-edge camera record --out calib.db3 --seconds 20"],
                    dest="camera_command", description="Inspect and record Intel RealSense cameras.")
    p = command(csub, "info", "streams, intrinsics, depth scale (recording file or live camera)",
                ["imagewam-edge camera info session.db3", "imagewam-edge camera info --serial 123456789012 --json",
                 "imagewam-edge camera info            # lists connected cameras"], camera_info, json=True,
                description="Show the streams of a recording (.db3/.bag) or of a live camera: type, size, fps, "
                            "format, intrinsics (fx fy ppx ppy model coeffs), depth scale and, for a recording, per "
                            "stream the frame count, first timestamp, time span and gaps (read stream by stream, no "
                            "paired framesets needed), and whether depth and colour pair.")
    p.add_argument("file", nargs="?", help="a .db3 or .bag recording")
    p.add_argument("--serial", help="serial number of a connected camera")

    p = command(csub, "record", "record live cameras to .db3",
                "imagewam-edge camera record --out calib.db3 --seconds 20 --width 640 --height 480 --fps 30",
                camera_record,
                description="Record color (+ depth) from connected RealSense cameras, e.g. for calibration or "
                            "quantization data. Several --serial values record several cameras to OUT_<serial>.db3.")
    p.add_argument("--out", required=True, help="output file (.db3)")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--serial", action="append", default=[], help="camera serial (repeat for several cameras)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--no-depth", action="store_true", help="color only")

    _, asub = group(sub, "arm", "arm controllers: simulators and bring-up checks",
                    ["imagewam-edge arm sim --protocol dynamixel --ids 1,2,3,4,5,6",
                     "imagewam-edge arm check --protocol dynamixel --port /dev/ttyUSB0 --ids 1,2,3 --json"],
                    dest="arm_command",
                    description="Serial arm controllers: Dynamixel Protocol 2.0, Feetech STS, framed protocol.")

    from drivers.arm.sim import add_sim_arguments

    p = command(asub, "sim", "run a simulated controller on a pty (prints the port)",
                ["imagewam-edge arm sim --protocol feetech --ids 1,2,3,4,5,6 --link /tmp/so101",
                 "# then, in another shell:",
                 "imagewam-edge arm check --protocol feetech --port /tmp/so101 --ids 1,2,3,4,5,6"], arm_sim,
                description="Run a controller simulator speaking the real protocol on a pseudo-terminal. It prints "
                            "the port to give to links / `arm check`, and runs until Ctrl-C. Present positions follow "
                            "goals at a limited speed once torque is on.")
    add_sim_arguments(p)

    p = command(asub, "check", "ping ids, read positions, measure round trip",
                "imagewam-edge arm check --protocol dynamixel --port /dev/ttyUSB0 --ids 1,2,3,4,5,6 --json", arm_check,
                json=True, description="Bring-up check: ping every id, read present positions (raw units, id order) "
                                       "and time N read round trips (p50, p99). Torque is not touched. --json: ids, "
                                       "present, rtt_ms {p50, p99}.")
    p.add_argument("--protocol", required=True, choices=("dynamixel", "feetech", "framed"))
    p.add_argument("--port", required=True, help="serial device or pty path")
    p.add_argument("--ids", required=True, help="comma-separated ids, e.g. 1,2,3")
    p.add_argument("--baudrate", type=int, default=1_000_000)
    p.add_argument("-n", "--iterations", type=int, default=200, help="round trips to time (default 200)")


# --- camera ------------------------------------------------------------------------------------------------------
def camera_info(args) -> int:
    from drivers.camera import realsense as r
    from drivers.errors import ConfigError

    if args.file and args.serial:
        raise ConfigError("give either a recording FILE or --serial, not both")
    if args.file:
        out = _recording_info(args.file)
    elif args.serial:
        out = _live_info(args.serial)
    else:
        out = {"devices": r.list_devices()}
    if args.json:
        emit_json(out)
    else:
        _print_info(out)
    return 0


def _recording_info(path: str) -> dict:
    """Each stream straight from the file (sensor-level playback: no framesets needed), and whether depth and colour
    pair; a .db3's message table cross-checks the frame counts."""
    from drivers.camera.realsense import import_rs, recording_streams
    from drivers.camera.recording_scan import pairing, scan_recording

    rs = import_rs()
    streams = recording_streams(path)
    ctx = rs.context()
    dev = ctx.load_device(path)
    depth_scale = None
    try:
        pb = dev.as_playback()
        duration = pb.get_duration().total_seconds()
        for s in dev.query_sensors():
            if s.is_depth_sensor():
                depth_scale = s.as_depth_sensor().get_depth_scale()
    finally:
        ctx.unload_device(path)
    scans = scan_recording(path)
    stored = {}
    if path.endswith(".db3"):
        from drivers.camera.recording import db3_frame_counts

        stored = db3_frame_counts(path)
    for s in streams:
        scan = scans.get(s["type"])
        if scan is not None and scan.index == s.get("index", scan.index):
            s.update({k: v for k, v in scan.summary().items() if k not in s or k == "frames"})
        else:
            s["frames"] = 0
        if s["type"] in stored and stored[s["type"]] != s["frames"]:
            s["frames_stored"] = stored[s["type"]]
    out = {"file": path, "serial": _serial_of(rs, path), "duration_s": duration, "depth_scale": depth_scale,
           "streams": streams}
    kinds = {s["type"] for s in streams if s.get("frames")}
    if {"color", "depth"} & kinds:
        out["pairing"] = pairing(scans.get("color"), scans.get("depth"))
    return out


def _serial_of(rs, path):
    ctx = rs.context()
    try:
        dev = ctx.load_device(path)
        return dev.get_info(rs.camera_info.serial_number) if dev.supports(rs.camera_info.serial_number) else None
    finally:
        ctx.unload_device(path)


def _live_info(serial: str) -> dict:
    from drivers.camera.realsense import _intrinsics, import_rs, list_devices
    from drivers.errors import CameraNotFoundError

    rs = import_rs()
    devices = list_devices()
    if serial not in [d["serial"] for d in devices]:
        raise CameraNotFoundError(f"no RealSense camera with serial {serial!r} is connected (connected: "
                                  f"{[d['serial'] for d in devices] or 'none'}). Check the cable and USB3 port, "
                                  "or run `imagewam-edge camera info` to list cameras.")
    dev = next(d for d in rs.context().query_devices() if d.get_info(rs.camera_info.serial_number) == serial)
    streams, depth_scale = [], None
    for s in dev.query_sensors():
        if s.is_depth_sensor():
            depth_scale = s.as_depth_sensor().get_depth_scale()
        for p in s.get_stream_profiles():
            if p.is_default() and p.is_video_stream_profile():
                v = p.as_video_stream_profile()
                streams.append({"type": str(p.stream_type()).split(".")[-1], "width": v.width(), "height": v.height(),
                                "fps": p.fps(), "format": str(p.format()).split(".")[-1],
                                "intrinsics": _intrinsics(p).to_dict()})
    return {"serial": serial, "depth_scale": depth_scale, "streams": streams}


def _print_info(out: dict) -> None:
    if "devices" in out:
        if not out["devices"]:
            print("no RealSense camera connected (give a recording FILE to inspect one)")
        for d in out["devices"]:
            print(f"{d['serial']}  {d['name']}  firmware {d['firmware']}  USB {d['usb']}")
        return
    head = out.get("file") or out.get("serial")
    print(f"{head}: serial {out.get('serial')}, depth scale {out.get('depth_scale')}"
          + (f", {out['duration_s']:.2f} s" if "duration_s" in out else ""))
    for s in out["streams"]:
        i = s.get("intrinsics") or {}
        line = f"  {s['type']:<6} {s.get('width')}x{s.get('height')} @ {s['fps']} fps {s['format']}"
        if "frames" in s:
            line += f"  {s['frames']} frames"
        if s.get("frames"):
            line += (f", t0 {s['first_timestamp_ms'] / 1000:.3f} s, span {s['span_s']:.3f} s, "
                     + (f"{s['gaps']} gap(s), ~{s['dropped_frames']} frame(s) dropped" if s["gaps"] else "no gaps"))
        if i:
            line += (f"  fx {i['fx']:.2f} fy {i['fy']:.2f} ppx {i['ppx']:.2f} ppy {i['ppy']:.2f} {i['model']} "
                     f"{[round(c, 5) for c in i['coeffs']]}")
        print(line)
    p = out.get("pairing")
    if p is not None:
        print(f"  depth + colour: {'paired' if p['pairable'] else 'CANNOT be paired'} ({p['reason']})"
              + ("" if p["pairable"] else "; playback plays colour alone, with a warning"))


def camera_record(args) -> int:
    from drivers.camera.realsense import RealSenseConfig
    from drivers.camera.recording import record_live

    configs = [RealSenseConfig(serial=s, width=args.width, height=args.height, fps=args.fps, depth=not args.no_depth)
               for s in args.serial] or [RealSenseConfig(width=args.width, height=args.height, fps=args.fps,
                                                         depth=not args.no_depth)]
    last = [0.0]

    def progress(t):
        if t - last[0] >= 1.0:
            last[0] = t
            print(f"\rrecording {t:.0f}/{args.seconds:.0f} s", end="", file=sys.stderr, flush=True)

    files = record_live(args.out, args.seconds, configs, progress)
    print(file=sys.stderr)
    for f in files:
        print(f)
    return 0


# --- arm ---------------------------------------------------------------------------------------------------------
def arm_sim(args) -> int:
    from drivers.arm.sim import parse_ids, run_from_args

    ids = parse_ids(args.ids)

    def announce(line):
        print(line, flush=True)
        print(f"simulated {args.protocol} controller, ids {ids}; connect with --port {line.split(' ', 1)[1]} "
              "(Ctrl-C to stop)", file=sys.stderr, flush=True)

    run_from_args(args, announce=announce)
    return 0


def make_link(protocol: str, port: str, ids, baudrate: int = 1_000_000, **kw):
    if protocol == "dynamixel":
        from drivers.arm.dynamixel import DynamixelConfig, DynamixelLink
        return DynamixelLink(DynamixelConfig(port=port, ids=tuple(ids), baudrate=baudrate, **kw))
    if protocol == "feetech":
        from drivers.arm.feetech import FeetechConfig, FeetechLink
        return FeetechLink(FeetechConfig(port=port, ids=tuple(ids), baudrate=baudrate, **kw))
    from drivers.arm.framed import FramedConfig, FramedLink
    return FramedLink(FramedConfig(port=port, ids=tuple(ids), baudrate=baudrate, **kw))


def arm_check(args) -> int:
    import numpy as np

    from drivers.arm.sim import parse_ids
    from drivers.errors import ConfigError

    ids = parse_ids(args.ids)
    if args.iterations < 1:
        raise ConfigError("--iterations must be >= 1")
    link = make_link(args.protocol, args.port, ids, args.baudrate, torque_off_on_disconnect=False)
    link.connect(check_ids=False)
    try:
        models = link.ping()
        missing = [i for i, m in models.items() if m is None]
        state = link.read_state()
        rtts = []
        for _ in range(args.iterations):
            t0 = time.perf_counter()
            link.read_state()
            rtts.append((time.perf_counter() - t0) * 1e3)
    finally:
        link.disconnect(torque_off=False)
    r = np.asarray(rtts)
    out = {"protocol": args.protocol, "port": args.port, "ids": ids, "models": {str(k): v for k, v in models.items()},
           "missing": missing, "present": [int(x) for x in state.raw],
           "rtt_ms": {"p50": round(float(np.percentile(r, 50)), 4), "p99": round(float(np.percentile(r, 99)), 4)},
           "iterations": args.iterations}
    if args.json:
        emit_json(out)
    else:
        print(f"{args.protocol} on {args.port}: ids {ids}" + (f", NO ANSWER from {missing}" if missing else ", all answered"))
        for i, m, p in zip(ids, [models[i] for i in ids], out["present"]):
            print(f"  id {i:>3}  model {m}  present {p}")
        print(f"  read round trip over {args.iterations}: p50 {out['rtt_ms']['p50']:.3f} ms, p99 {out['rtt_ms']['p99']:.3f} ms")
    return 1 if missing else 0
