"""An arm link from one `arms[i]` entry of the run config: the vendor driver, its joint mapping (from the
calibration file when given) and the safety limits (app layer: drivers + config, no policy)."""
from __future__ import annotations

from .config import ArmConfig
from .errors import ConfigError


def make_link(ac: ArmConfig, port: str, i: int, source: str):
    from drivers.arm.calibration_file import load_joint_mapping
    from drivers.arm.safety import SafetyLimits

    where = f"{source}: `arms[{i}]`"
    fields = {"port": port, "ids": list(ac.ids), "baudrate": ac.baudrate, **ac.link}
    if ac.protocol == "dynamixel":
        from drivers.arm.dynamixel import DynamixelConfig as Cfg, DynamixelLink as Link
    elif ac.protocol == "feetech":
        from drivers.arm.feetech import FeetechConfig as Cfg, FeetechLink as Link
    else:
        from drivers.arm.framed import FramedConfig as Cfg, FramedLink as Link
    try:
        cfg = Cfg.from_dict(fields)
        mapping = Link.default_mapping(ac.ids)
        if ac.calibration:  # a missing, corrupt or mismatched file: an error naming the file, the field and the fix
            mapping = load_joint_mapping(ac.calibration, ids=ac.ids)
        lo, hi = mapping.limits_in_units()
        # the limits the config gives; the rest: the calibration's range and SafetyConfig's defaults
        limits = SafetyLimits.create(mapping.n, **{"lower": lo, "upper": hi, **ac.safety})
        return Link(cfg, mapping, limits)
    except ValueError as exc:  # drivers' ConfigError
        raise ConfigError(f"{where}: {exc}") from None
