"""The robot side of a served policy (`policy.backend: remote`): the policy contract (`infer(obs) -> dict`, `spec`,
`canvas`, `text`, `reset`) over Triton's gRPC protocol (tritonclient; numpy 2 is fine, no torch, no engines here).

Every request has a deadline (`timeout_s`). A late or failed answer is, for the control loop, exactly a slow policy:
`infer` keeps trying (a fresh connection after a failure, short back-off) while the loop holds the last command;
the loop's own `fault.inference_timeout_s` then makes the fault, or the server comes back and the next answer
arrives: the client reconnects by itself. `infer` gives up after `retry_s` (or at once after `close()`). An error
the server reports for the request itself (a wrong state size, an instruction missing from its prompt cache) is
not retried: it raises at once with the server's message.

Latency: `timings_ms` splits the step into the server's stages (its own `policy.infer` timings), `server` (the
server's whole handling), `network` (round trip minus server: transport, (de)serialisation, Triton's queue) and
`encode` (building the request here); `total` is what the loop waited."""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..config import REMOTE_URL
from ..errors import ConfigError, require
from ..policy import PolicySpec
from ..transforms import get_canvas, get_embodiment
from . import protocol
from .errors import RemotePolicyError, RemoteUnavailable

log = logging.getLogger(__name__)

# gRPC status codes after which the request is tried again (on a fresh connection): no server, no answer in time,
# the model not loaded (yet) after a restart, the server shutting down or overloaded
RETRY = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.NOT_FOUND", "StatusCode.CANCELLED",
         "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.ABORTED"}
DTYPES = {np.uint8: "UINT8", np.float64: "FP64", np.float32: "FP32", np.int64: "INT64", np.object_: "BYTES"}
_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$")


@dataclass(frozen=True)
class RemoteConfig:
    url: str  # host:port of Triton's gRPC endpoint
    timeout_s: float = 2.0  # deadline of one request
    connect_timeout_s: float = 30.0  # at start: how long to wait for the server to be ready
    retry_s: float = 30.0  # one `infer` call gives up after this long without an answer
    backoff_s: tuple = (0.05, 0.5)  # pause after a failed try: first, at most (doubling)

    def __post_init__(self):
        if not isinstance(self.url, str) or not REMOTE_URL.fullmatch(self.url):
            raise ConfigError(f"policy.url {self.url!r}: give host:port of the Triton gRPC endpoint, e.g. "
                              "127.0.0.1:8001 (`imagewam-edge serve` prints it)")
        for name in ("timeout_s", "connect_timeout_s", "retry_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"policy.{name} must be > 0, got {getattr(self, name)!r}")


def server_error(exc) -> Exception:
    """A Triton error -> our typed error with the server's own message (the last `XxxError: ...` line)."""
    message = exc.message() if hasattr(exc, "message") else str(exc)
    lines = [m for m in (_ERROR_LINE.match(l.strip()) for l in str(message).splitlines()) if m]
    if lines:
        kind, text = lines[-1].group(1), lines[-1].group(2)
        if kind == "ConfigError":
            return ConfigError(f"the policy server refused the request: {text}")
        return RemotePolicyError(f"the policy server failed: {kind}: {text}")
    return RemotePolicyError(f"the policy server failed: {str(message)[-400:]}")


class RemotePolicy:
    """`ImageWAMPolicy`'s contract, computed by a Triton server. `backend` is the policy itself (`close()`)."""

    def __init__(self, config: RemoteConfig, progress: Callable[[str], None] = lambda s: None):
        self.grpc = require("tritonclient.grpc", "remote")
        from tritonclient.utils import InferenceServerException

        self._exc = InferenceServerException
        self.config = config
        self.backend = self
        self._closed = threading.Event()
        self._client = None
        self._checked: set[str] = set()
        self.reconnects = self.retries = 0
        doc = self._connect(progress)
        if doc.get("protocol") != protocol.PROTOCOL:
            raise RemotePolicyError(f"the server at {config.url} speaks protocol {doc.get('protocol')!r}, this robot "
                                    f"{protocol.PROTOCOL}: run the same imagewam-edge version on both")
        self.server = doc.get("server", {})
        self.spec = PolicySpec.from_dict(doc["spec"], f"policy spec from {config.url}")
        self.embodiment = get_embodiment(self.spec.embodiment)
        self.canvas = get_canvas(doc["canvas"])
        self.n_slots = len(self.canvas.slots)

    # --- connection ---------------------------------------------------------------------------------------------
    def _new_client(self):
        if self._client is not None:
            try:
                self._client.close()
            except Exception as exc:  # an already broken channel
                log.debug("closing the old channel: %s", exc)
        g = self.grpc
        size = getattr(g, "MAX_GRPC_MESSAGE_SIZE", 2**31 - 1)
        args = [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size),
                ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500)]
        self._client = g.InferenceServerClient(self.config.url, channel_args=args)
        return self._client

    def _connect(self, progress) -> dict:
        """Wait (up to connect_timeout_s) for the server and its spec model; returns the spec document."""
        deadline = time.monotonic() + self.config.connect_timeout_s
        said = False
        while True:
            try:
                return self._spec_call("")
            except RemoteUnavailable as exc:
                if time.monotonic() > deadline or self._closed.is_set():
                    raise RemotePolicyError(
                        f"no policy server ready at {self.config.url} after {self.config.connect_timeout_s:g} s "
                        f"({exc}); start one with `imagewam-edge serve --engines DIR` (on that machine), or fix "
                        "policy.url") from None
                if not said:
                    progress(f"waiting for the policy server at {self.config.url}")
                    said = True
                time.sleep(0.2)

    def _spec_call(self, instruction: str) -> dict:
        inputs = self._inputs({"instruction": protocol.encode_text(instruction)})
        try:
            result = (self._client or self._new_client()).infer(protocol.SPEC_MODEL, inputs,
                                                                client_timeout=self.config.timeout_s)
        except self._exc as exc:
            if str(exc.status()) in RETRY:
                self._new_client()
                raise RemoteUnavailable(f"{exc.status()}: {exc.message()}") from None
            raise server_error(exc) from None
        return protocol.decode_json(result.as_numpy("spec"))

    def _inputs(self, arrays: dict) -> list:
        out = []
        for name, a in arrays.items():
            x = self.grpc.InferInput(name, list(a.shape), DTYPES[a.dtype.type])
            x.set_data_from_numpy(a)
            out.append(x)
        return out

    # --- the policy contract ------------------------------------------------------------------------------------
    def text(self, instruction: str):
        """Check with the server that `instruction` is in its prompt cache (raises ConfigError if not)."""
        if instruction not in self._checked:
            self._spec_call(instruction)
            self._checked.add(instruction)

    def reset(self) -> None:
        self._checked.clear()

    def infer(self, obs: dict, noise: np.ndarray | None = None, seed: int | None = None) -> dict:
        t_start = time.perf_counter()
        inputs = self._inputs(protocol.request_arrays(obs, self.n_slots, noise=noise, seed=seed))
        t_sent = time.perf_counter()
        encode_ms = (t_sent - t_start) * 1e3
        result, waited, tries = self._call(inputs, t_start)
        t_back = time.perf_counter()
        info = protocol.decode_json(result.as_numpy("info"))
        rtt = (t_back - waited) * 1e3
        timings = {k: v for k, v in info["timings_ms"].items() if k != "total"}
        timings.update({"encode": encode_ms, "server": info["server_ms"],
                        "network": max(0.0, rtt - info["server_ms"])})
        if tries > 1:
            timings["retry_wait"] = (waited - t_sent) * 1e3
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return {"actions": result.as_numpy("actions"), "actions_normalized": result.as_numpy("actions_normalized"),
                "timings_ms": timings, "step_ms": info["step_ms"], "transfer_bytes": info["transfer_bytes"]}

    def _call(self, inputs: list, t_start: float):
        """One request, tried again on a fresh connection until it is answered, `retry_s` passes or `close()`.
        Returns (result, time the answered try was sent, tries)."""
        give_up = t_start + self.config.retry_s
        pause, last, tries = self.config.backoff_s[0], None, 0
        while not self._closed.is_set():
            t_try = time.perf_counter()
            tries += 1
            try:
                client = self._client or self._new_client()
                result = client.infer(protocol.MODEL, inputs, client_timeout=self.config.timeout_s)
                if tries > 1:
                    log.warning("policy server %s answered again after %.1f s (%d tries)", self.config.url,
                                time.perf_counter() - t_start, tries)
                return result, t_try, tries
            except self._exc as exc:
                if str(exc.status()) not in RETRY:
                    raise server_error(exc) from None
                last = f"{exc.status()}: {exc.message()}"
            if tries == 1:
                log.warning("policy server %s: %s; trying again on a fresh connection (the loop holds meanwhile)",
                            self.config.url, last)
            self.retries += 1
            if time.perf_counter() + pause > give_up:
                break
            if self._closed.wait(pause):
                break
            pause = min(2 * pause, self.config.backoff_s[1])
            self.reconnects += 1
            self._new_client()
        why = "closed" if self._closed.is_set() else f"no answer for {self.config.retry_s:g} s"
        raise RemoteUnavailable(f"policy server {self.config.url}: {why} (last: {last}); is `imagewam-edge serve` "
                                f"running and reachable? A step slower than policy.timeout_s = "
                                f"{self.config.timeout_s:g} s is never answered in time: raise it")

    def close(self) -> None:
        self._closed.set()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:
                log.debug("closing the channel: %s", exc)


def connect(url: str, timeout_s: float = 2.0, progress: Callable[[str], None] = lambda s: None,
            **kw) -> RemotePolicy:
    return RemotePolicy(RemoteConfig(url, timeout_s, **kw), progress)
