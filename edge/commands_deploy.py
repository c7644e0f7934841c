"""Subcommands for deployment: `bundle` (workstation), `flash` and `doctor` (device)."""
from __future__ import annotations

from .cli_util import add_config, add_engines, add_json, command, emit_json
from .errors import ConfigError


def register(sub) -> None:
    p = command(sub, "bundle", "Pack engines, config, calibration files and the prompt cache of the listed "
                "instructions into one versioned artifact with a checksummed manifest.",
                "imagewam-edge bundle --engines engines/int8 --config robot.yaml --calibration calib/ "
                "--prompts instructions.txt --out robot-int8.tar.gz", _bundle)
    add_engines(p, "engines directory: ONNX engines (from export / quantize: flash builds TensorRT engines on the "
                "device) or TensorRT engines built for the target", required=True)
    add_config(p, required=True)
    p.add_argument("--calibration", help="directory holding the calibration files the config references")
    p.add_argument("--prompts", required=True, help="text file: the instructions the robot will get, one per line")
    p.add_argument("--prompt-cache", help="prompt cache with those instructions (default: the engines' prompts.npz)")
    p.add_argument("--target", default="orin", choices=["orin", "thor"], help="device family (default orin)")
    p.add_argument("--nvpmodel", type=int, default=0, help="power mode flash sets (default 0: MAXN; -1: leave it)")
    p.add_argument("--no-jetson-clocks", action="store_true", help="do not lock the clocks at maximum")
    p.add_argument("--serial-alias", action="append", default=[], metavar="NAME=USB_SERIAL",
                   help="stable /dev/NAME for the USB-serial adapter with this serial (repeatable)")
    p.add_argument("--user", default="imagewam", help="user the service runs as (default imagewam)")
    p.add_argument("--out", required=True, help="BUNDLE.tar.gz (archive) or a directory")
    add_json(p)

    p = command(sub, "flash", "Install a bundle on this Jetson (or on --host over ssh): verify checksums, build "
                "TensorRT engines if the bundle has ONNX, udev rules, dialout, a systemd unit, power mode and clocks. "
                "Idempotent; a failure keeps the previous installation.",
                "sudo imagewam-edge flash robot-int8.tar.gz --dry-run", _flash)
    p.add_argument("bundle", help="bundle archive or directory")
    p.add_argument("--host", help="user@jetson: copy the bundle there and flash over ssh")
    p.add_argument("--root", default="/", help="install under this prefix (staging/testing; default /)")
    p.add_argument("--dry-run", action="store_true", help="print every step; run no system command")
    p.add_argument("--no-system", action="store_true", help="only files and engines; no udev/groups/systemd/power")
    p.add_argument("--user", help="user the service runs as (default: the bundle's)")
    add_json(p)

    p = command(sub, "doctor", "Check this device: JetPack/L4T, CUDA, TensorRT, compute capability and allowed "
                "precisions, memory, cameras, serial ports and permissions, power mode, clocks, engines; each "
                "problem with its fix. Exit code 1 if something fails.", "imagewam-edge doctor --json", _doctor,
                json=True)
    add_engines(p, "engines directory to check (default /opt/imagewam/current)", old=())


def _aliases(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--serial-alias {item!r}: use NAME=USB_SERIAL, e.g. imagewam-arm0=FT4TB1X2")
        name, serial = item.split("=", 1)
        out[name.strip()] = serial.strip()
    return out


def _bundle(args) -> int:
    from .deploy.bundle import make_bundle

    manifest = make_bundle(args.config, args.out, args.engines, args.prompts, args.calibration,
                           args.prompt_cache, args.target, None if args.nvpmodel < 0 else args.nvpmodel,
                           not args.no_jetson_clocks, _aliases(args.serial_alias), args.user)
    if args.json:
        emit_json(manifest)
    else:
        m = manifest["model"]
        print(f"wrote {args.out}: bundle {manifest['version']} ({m['variant']} {m['precision']} {m['engines']}, "
              f"target {manifest['target']['name']}, {len(manifest['files'])} files, "
              f"{len(manifest['instructions'])} instruction(s))")
    return 0


def _flash(args) -> int:
    import subprocess
    import sys
    from pathlib import Path

    from .deploy.flash import check_remote_tools, flash, remote_commands

    say = (lambda s: print(s, file=sys.stderr)) if args.json else print
    if args.host:
        if not Path(args.bundle).exists():
            raise ConfigError(f"bundle {args.bundle} not found; pass the archive or directory written by "
                              "`imagewam-edge bundle`")
        if not args.dry_run:
            check_remote_tools()
        extra = [a for a, on in (("--dry-run", args.dry_run), ("--no-system", args.no_system)) if on]
        commands = remote_commands(args.bundle, args.host, extra)
        for cmd in commands:
            say("$ " + " ".join(cmd))
            if not args.dry_run and subprocess.run(cmd, stdout=sys.stderr if args.json else None).returncode:
                raise ConfigError(f"`{' '.join(cmd[:2])} ...` failed; check ssh access to {args.host}")
        if args.json:  # the one JSON object, as everywhere
            emit_json({"host": args.host, "dry_run": args.dry_run, "commands": [" ".join(c) for c in commands]})
        return 0
    result = flash(args.bundle, root=args.root, dry_run=args.dry_run, no_system=args.no_system, user=args.user, say=say)
    if args.json:
        emit_json(result)
    else:
        print(f"{'planned' if args.dry_run else 'installed'} bundle {result['version']} under {result['root']}")
    return 0


def _doctor(args) -> int:
    from .deploy.doctor import run_doctor

    report = run_doctor(args.engines)
    if args.json:
        emit_json(report)
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "    "}
        for c in report["checks"]:
            print(f"[{marks[c['status']]}] {c['name']}: {c['detail']}")
            if c["fix"] and c["status"] in ("warn", "fail"):
                print(f"       fix: {c['fix']}")
        s = report["summary"]
        print(f"{s['ok']} ok, {s['warn']} warnings, {s['fail']} failures")
    return 1 if report["summary"]["fail"] else 0
