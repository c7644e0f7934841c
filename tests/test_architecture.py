"""The dependency rule of the house (docs/architecture.md), measured from the code's own imports (every `import`
and `from ... import` anywhere in a module, inside functions too), not from a list of allowed edges:

  core     edge/ policy core: contract, transforms, normalisation, sampler, RoPE, prompt cache, backends,
           manifest, recording format, model records      -> imports nothing of quantize, drivers, calib, torch
  drivers  drivers/ (arms, cameras), calib/               -> core only; no quantize, no torch
  app      the robot runtime in edge/ (loop, task, serve, deploy)  -> core, drivers, calib; no quantize, no torch
  quantize quantize/ (checkpoint, export, PTQ, torch backend)      -> core, app; never the CLI
  cli      modules named cli*/commands* in any package (and calib/cli/), edge bench*, default, runtime, serve:
           the only room that reaches every package
and no circle of imports anywhere."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "quantize", "drivers", "calib")
CLI = ("edge.bench", "edge.bench_reference", "edge.default", "edge.runtime", "edge.serve", "edge.loader")
APP = ("edge.loop", "edge.loop_bus", "edge.realtime", "edge.stop_signals", "edge.task.camera", "edge.task.evaluate",
       "edge.deploy", "edge.config", "edge.arm_links", "edge.synthetic")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = f
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the names it imports (modules of ours resolved to the deepest existing module; others as given)."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods]
            else:
                continue
            for t in targets:
                ours = t
                while ours and ours not in mods and "." in ours:
                    ours = ours.rsplit(".", 1)[0]
                found.add(ours if ours in mods else t)
        found.discard(name)
        graph[name] = found
    return graph


def layer(module: str) -> str:
    top = module.split(".")[0]
    parts = module.split(".")
    if any(p == "cli" or p.startswith(("cli_", "commands")) for p in parts[1:]):
        return "cli"  # every package's command-line room (edge/cli.py, quantize/commands.py, calib/cli/, ...)
    if top in ("drivers", "calib"):
        return "drivers"
    if top == "quantize":
        return "quantize"
    if top != "edge":
        return "external"
    if any(module == m or module.startswith(m + ".") for m in CLI):
        return "cli"
    if any(module == m or module.startswith(m + ".") for m in APP):
        return "app"
    return "core"


FORBIDDEN = {  # layer -> layers (and external roots) it must not import
    "core": {"quantize", "drivers", "app", "cli", "torch"},
    "drivers": {"quantize", "app", "cli", "torch"},
    "app": {"quantize", "cli", "torch"},
    "quantize": {"cli"},
}


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, targets in sorted(graph.items()):
        rules = FORBIDDEN.get(layer(mod), set())
        for t in sorted(targets):
            what = layer(t) if t.split(".")[0] in PACKAGES else t.split(".")[0]
            if what in rules:
                bad.append(f"{mod} ({layer(mod)}) imports {t} ({what})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    nodes = {n: sorted(t for t in ts if t in graph) for n, ts in graph.items()}
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(nodes[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif nxt not in index:
                index[nxt] = low[nxt] = counter[0]
                counter[0] += 1
                stack.append(nxt)
                on.add(nxt)
                work.append((nxt, iter(nodes[nxt])))
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
    return out


def test_layers_import_only_downwards():
    bad = violations(imports(modules()))
    assert not bad, "dependency rule broken (docs/architecture.md):\n" + "\n".join(bad)


def test_no_circle_of_imports():
    found = cycles(imports(modules()))
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_checks_catch_what_they_guard(tmp_path):
    """The analysis itself: a core module importing torch and a two-module circle are both found."""
    graph = {"edge.policy": {"torch", "edge.sampler"}, "edge.sampler": {"edge.policy"}, "edge.cli": {"quantize.x"},
             "quantize.x": set()}
    assert violations(graph) == ["edge.policy (core) imports torch (torch)"]
    assert cycles(graph) == [["edge.policy", "edge.sampler"]]


if __name__ == "__main__":  # python tests/test_architecture.py: print the current state
    g = imports(modules())
    print("\n".join(violations(g)) or "no layer violations")
    print("\n".join(" <-> ".join(c) for c in cycles(g)) or "no circles")
    sys.exit(0)
