"""The server side of one request, the same in both deployments (PyTriton binding, stock Triton's Python backend):
named arrays -> `policy.infer` -> named arrays. One handler per model instance (a policy's backend binds its
buffers per control step: one request at a time per policy; Triton queues the rest or hands them to another
instance)."""
from __future__ import annotations

import logging
import threading
import time

from . import protocol

log = logging.getLogger(__name__)


class PolicyHandler:
    def __init__(self, policy, instance: int = 0):
        self.policy, self.instance = policy, instance
        self.n_slots = len(policy.canvas.slots)
        self._busy = threading.Lock()  # a second caller of the same instance waits instead of corrupting buffers
        self.served = 0

    def __call__(self, inputs) -> dict:
        t = time.perf_counter()
        obs, noise, seed = protocol.obs_from_arrays(inputs, self.n_slots)
        with self._busy:
            out = self.policy.infer(obs, noise=noise, seed=seed)
        self.served += 1
        return protocol.response_arrays(out, server_ms=(time.perf_counter() - t) * 1e3)


class SpecHandler:
    """`imagewam_spec`: what the robot must know (policy.json, canvas) and whether an instruction is in the prompt
    cache (the policy's own check raises the error the robot shows)."""

    def __init__(self, handler: PolicyHandler, server: dict):
        self.handler, self.server = handler, server

    def __call__(self, inputs) -> dict:
        instruction = protocol.decode_text(inputs["instruction"])
        policy = self.handler.policy
        if instruction:
            with self.handler._busy:  # the instance's policy, between two of its control steps
                policy.text(instruction)
        return {"spec": protocol.encode_json(protocol.spec_document(policy, self.server))}
