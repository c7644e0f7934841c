"""Typed driver errors. The CLI prints their messages without a traceback, so every message names the
device (port, serial number, file, field) and says what to do next."""
from __future__ import annotations

from typing import Any

# one error root and one ConfigError for the whole package (a device config that is invalid names the field and
# the accepted values; a missing SDK gives the pip command)
from edge.errors import ConfigError, ImageWAMEdgeError, MissingDependencyError  # noqa: F401  (re-exported)


class DriverError(ImageWAMEdgeError):
    """Base of every device error the drivers raise on purpose."""


# --- cameras -------------------------------------------------------------------------------------------------
class CameraError(DriverError):
    """A camera could not be opened, configured or read."""


class CameraNotFoundError(CameraError):
    """No camera with the requested serial number (or no camera at all) is connected."""


class CameraStalledError(CameraError):
    """No new frame arrived within the timeout (camera unplugged, USB bandwidth, or a recording ended)."""


class RecordingEndedError(CameraStalledError):
    """A recording played back to its end; reconnect() starts it again from the beginning."""


# --- arms ----------------------------------------------------------------------------------------------------
class ArmError(DriverError):
    """Base of arm errors. Faults carry the last state read and the last command sent (may be None)."""

    def __init__(self, message: str, *, last_state: Any = None, last_command: Any = None):
        super().__init__(message)
        self.last_state = last_state
        self.last_command = last_command


class ArmLinkError(ArmError):
    """The serial link failed: port missing, no reply, timeout, or the controller went away."""


class ProtocolError(ArmLinkError):
    """Bytes arrived but do not form a valid packet/frame (CRC, length, version, unexpected reply)."""


class ReplyError(ArmLinkError):
    """One transaction got no usable reply (lost, late or corrupt). Transient: the port stays open and the next
    transaction may succeed; the control loop retries within the tick and rides through on the last state up to its
    staleness budget (`fault.max_stale_s`)."""

    kind = "lost"


class ReplyLostError(ReplyError):
    """No reply byte arrived within the reply budget (dropped on the bus, or too late for this tick)."""

    kind = "lost"


class ReplyCorruptError(ReplyError):
    """Reply bytes arrived but did not form a valid packet (bad checksum/CRC, truncated, wrong id)."""

    kind = "corrupt"


class PortClosedError(ArmLinkError):
    """The serial port itself failed (adapter unplugged, device gone): not transient, a fault in the loop."""


class NotConnectedError(ArmLinkError):
    """The link is not connected (lifecycle: connect() first; reading needs a connected link)."""


class ControllerError(ArmError):
    """The controller answered with an error (framed protocol error frame, servo hardware error bit)."""


class SafetyError(ArmError):
    """A command was refused by a safety check (NaN/inf, e-stop latched, watchdog tripped)."""


class EStopError(SafetyError):
    """The e-stop is latched; nothing moves until it is cleared on purpose."""


class WatchdogTrippedError(SafetyError):
    """The controller-side watchdog stopped the arm because the host went silent."""


class NotActiveError(SafetyError):
    """A command was refused because the link is not active: torque is off as far as this host knows (lifecycle:
    torque(True) makes a connected link active; torque off, an e-stop or a disconnect ends it)."""


class OutOfRangeError(SafetyError):
    """A command lay beyond the joint limits by more than the allowed margin (`safety.on_out_of_range: fault`)."""


class BusFaultError(ArmLinkError):
    """The bus stayed unusable longer than the staleness budget; the message gives the measured loss rate."""
