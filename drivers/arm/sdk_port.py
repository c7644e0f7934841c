"""A vendor-SDK PortHandler (dynamixel_sdk / scservo_sdk) whose reply wait is bounded by the caller's budget and
blocks instead of spinning.

The SDKs poll `readPort` in a busy loop (the port is opened with timeout 0) until their own packet timeout (~34 ms
at 1 Mbaud: 2 x the 16 ms FTDI latency + 2 ms). In a control loop that burns a core and holds the GIL against the
inference thread, and a lost reply stalls the tick for 34 ms. Here `readPort` waits in `select` (GIL released) until
bytes arrive or the budget runs out, the packet timeout is the budget the link sets per transaction
(`reply_budget_ms`: the time left in the control tick) on the monotonic clock (the SDKs use wall-clock time), and
`clearPort` drops stale input (scservo's version flushes only output) and counts the bytes it dropped: leftovers of a
reply that arrived after its transaction gave up, i.e. a late reply."""
from __future__ import annotations

import select
import time


def budgeted_port(sdk, port_name: str, reply_budget_ms: float = 50.0):
    """An instance of a PortHandler subclass of `sdk.PortHandler` (the SDK module) for `port_name`."""

    class BudgetedPortHandler(sdk.PortHandler):
        def __init__(self, name):
            super().__init__(name)
            self.reply_budget_ms = float(reply_budget_ms)
            self.stale_bytes = 0  # bytes dropped by the last clearPort

        def getCurrentTime(self):  # noqa: N802  monotonic ms: a wall-clock step (NTP at boot) must not stretch a wait
            return time.monotonic() * 1000.0

        def setPacketTimeout(self, packet_length):  # noqa: N802  (SDK API)
            self.packet_start_time = self.getCurrentTime()
            self.packet_timeout = self.reply_budget_ms

        def setPacketTimeoutMillis(self, msec):  # noqa: N802
            self.packet_start_time = self.getCurrentTime()
            self.packet_timeout = min(float(msec), self.reply_budget_ms)

        def clearPort(self):  # noqa: N802
            ser = self.ser
            n = ser.in_waiting
            if n:
                ser.reset_input_buffer()
            self.stale_bytes = n

        def readPort(self, length):  # noqa: N802
            data = self.ser.read(length)
            if data:
                return data
            remaining_ms = min(self.packet_timeout - self.getTimeSinceStart(), self.reply_budget_ms)
            if remaining_ms > 0:
                select.select([self.ser.fileno()], [], [], remaining_ms / 1000.0)
                data = self.ser.read(length)
            return data

    return BudgetedPortHandler(port_name)
