"""The named tensors of the served policy: what the robot sends and what comes back. numpy only (both sides import it:
the server in its numpy < 2 environment, the robot in the main one).

Model `imagewam` (one request = one control step, no batching):
  inputs   image_0 .. image_{n-1}  UINT8 [H, W, 3]  one per camera slot, in the canvas's slot order
           state                   FP64  [state_dim]
           instruction             BYTES [1]  the task in words; it is also the prompt-cache key (the server looks
                                              its text embedding up in the engines' prompt cache, never re-encodes)
           seed                    INT64 [1]  optional: the initial noise from this seed (edge.sampler.initial_noise)
           noise                   FP32  [horizon, action_dim]  optional: the initial noise itself (wins over seed)
  outputs  actions                 FP64  [horizon, action_dim]  un-normalised, post-processed (lossless for FP32)
           actions_normalized      FP32  [horizon, action_dim]
           info                    BYTES [1]  JSON: timings_ms (server stages), step_ms, transfer_bytes, server_ms
Model `imagewam_spec`: input `instruction` BYTES [1] (checked against the prompt cache when not empty), output `spec`
BYTES [1]: JSON {"protocol", "spec" (policy.json), "canvas", "slots", "server"}."""
from __future__ import annotations

import json

import numpy as np

PROTOCOL = 1
MODEL = "imagewam"
SPEC_MODEL = "imagewam_spec"
NO_SEED = -1  # `seed` value meaning "no seed" (a fresh random draw on the server)


def image_name(k: int) -> str:
    return f"image_{k}"


def encode_text(s: str) -> np.ndarray:
    return np.array([s.encode("utf-8")], dtype=np.object_)


def decode_text(a) -> str:
    v = np.asarray(a).reshape(-1)[0]
    return v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v)


def encode_json(obj) -> np.ndarray:
    from ..cli_util import _default  # numpy arrays and scalars as plain JSON

    return encode_text(json.dumps(obj, default=_default))


def decode_json(a) -> dict:
    return json.loads(decode_text(a))


def request_arrays(obs: dict, n_slots: int, noise=None, seed: int | None = None) -> dict[str, np.ndarray]:
    """obs (the policy contract) -> {input name: array}; the optional inputs only when given."""
    images = list(obs["images"])
    if len(images) != n_slots:
        from ..errors import ConfigError

        raise ConfigError(f"the served policy takes {n_slots} camera image(s) (one per canvas slot), got {len(images)}")
    out = {image_name(k): np.ascontiguousarray(np.asarray(im, dtype=np.uint8)) for k, im in enumerate(images)}
    out["state"] = np.ascontiguousarray(np.asarray(obs["state"], dtype=np.float64).reshape(-1))
    out["instruction"] = encode_text(obs["instruction"])
    if seed is not None:
        out["seed"] = np.array([int(seed)], dtype=np.int64)
    if noise is not None:
        out["noise"] = np.ascontiguousarray(np.asarray(noise, dtype=np.float32).reshape(-1, np.shape(noise)[-1]))
    return out


def obs_from_arrays(inputs, n_slots: int) -> tuple[dict, np.ndarray | None, int | None]:
    """{input name: array} (a Triton request) -> (obs, noise, seed): the inverse of `request_arrays`."""
    obs = {"images": [np.asarray(inputs[image_name(k)], dtype=np.uint8) for k in range(n_slots)],
           "state": np.asarray(inputs["state"], dtype=np.float64).reshape(-1),
           "instruction": decode_text(inputs["instruction"])}
    noise = inputs.get("noise") if hasattr(inputs, "get") else None
    seed_a = inputs.get("seed") if hasattr(inputs, "get") else None
    seed = None
    if seed_a is not None:
        seed = int(np.asarray(seed_a).reshape(-1)[0])
        seed = None if seed == NO_SEED else seed
    return obs, (None if noise is None else np.asarray(noise, dtype=np.float32)), seed


def response_arrays(out: dict, server_ms: float) -> dict[str, np.ndarray]:
    """`policy.infer` output -> {output name: array}."""
    info = {"timings_ms": out["timings_ms"], "step_ms": list(out.get("step_ms", ())),
            "transfer_bytes": out.get("transfer_bytes", {}), "server_ms": server_ms}
    return {"actions": np.asarray(out["actions"], dtype=np.float64),
            "actions_normalized": np.asarray(out["actions_normalized"], dtype=np.float32),
            "info": encode_json(info)}


def spec_document(policy, server: dict) -> dict:
    return {"protocol": PROTOCOL, "spec": policy.spec.to_dict(), "canvas": policy.canvas.name,
            "slots": [s.name for s in policy.canvas.slots], "server": server}


# Triton tensor declarations: (name, numpy dtype, shape, optional); the PyTriton binding and the model repository
# are both written from these.
def model_inputs(n_slots: int) -> list[tuple]:
    return ([(image_name(k), np.uint8, (-1, -1, 3), False) for k in range(n_slots)]
            + [("state", np.float64, (-1,), False), ("instruction", np.bytes_, (1,), False),
               ("seed", np.int64, (1,), True), ("noise", np.float32, (-1, -1), True)])


MODEL_OUTPUTS = [("actions", np.float64, (-1, -1)), ("actions_normalized", np.float32, (-1, -1)),
                 ("info", np.bytes_, (1,))]
SPEC_INPUTS = [("instruction", np.bytes_, (1,), False)]
SPEC_OUTPUTS = [("spec", np.bytes_, (1,))]
