"""The policy served by Triton Inference Server, the control loop on the robot.

- protocol.py: the named tensors both sides agree on (numpy only; no Triton import),
- handler.py: the server side of one request (decode -> `policy.infer` -> encode), shared by the two deployments,
- server.py: the PyTriton binding (`imagewam-edge serve`: Triton's own server binary, shipped in `nvidia-pytriton`,
  in front of our policy; numpy < 2, so it runs in its own environment, see env.py),
- model_repo.py: a model repository for a stock Triton container (Python backend, our engines),
- client.py: `RemotePolicy`, the robot side (`policy.backend: remote`; tritonclient gRPC, a deadline per request,
  reconnects when the server returns),
- env.py: the serving environment (created on request, never by the main install),
- launch.py: a server as a child process group (readiness wait, stop, kill), for benchmarks and tests,
- commands.py: the `serve` subcommand, main.py: the server process's entry point in the serving environment."""
