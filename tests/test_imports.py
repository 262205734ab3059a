"""Importing fatlib has no process-wide side effect, and its modules import each other without cycles.

- every module, imported first in a fresh interpreter, imports cleanly and leaves the environment
  variables, signal handlers, warning filters, torch's thread count and the malloc settings
  (fatlib.sysalloc) as they were, and imports neither torchvision nor fastai.vision;
- the graph of fatlib's own imports (function-local ones included) has no cycle beyond the one
  listed in KNOWN_CYCLES.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fatlib"
# none: the train <-> recipes cycle ended when StageConfig moved to fatlib.settings
KNOWN_CYCLES: list = []

PROBE = r"""
import importlib, json, os, signal, sys, warnings

import torch

def state():
    sysalloc = sys.modules.get("fatlib.sysalloc")
    return {
        "environ": dict(os.environ),
        "signals": {s.name: signal.getsignal(s) for s in signal.valid_signals() if hasattr(s, "name")},
        "warnings": list(warnings.filters),
        "torch_threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "malloc_tuned": getattr(sysalloc, "_applied", None),
        "forbidden": sorted(m for m in sys.modules if m == "torchvision" or m.startswith(("torchvision.", "fastai.vision"))),
    }

def restore(saved):
    os.environ.clear()
    os.environ.update(saved["environ"])
    for name, handler in saved["signals"].items():
        if handler is not None and signal.getsignal(getattr(signal, name)) != handler:
            signal.signal(getattr(signal, name), handler)
    warnings.filters[:] = saved["warnings"]
    warnings._filters_mutated()
    torch.set_num_threads(saved["torch_threads"])
    torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]

def diff(before, after):
    out = {}
    env = {k: after["environ"].get(k) for k in set(before["environ"]) | set(after["environ"])
           if before["environ"].get(k) != after["environ"].get(k)}
    if env:
        out["environ"] = env
    sig = [k for k in before["signals"] if before["signals"][k] != after["signals"].get(k)]
    if sig:
        out["signals"] = sig
    added = [repr(f) for f in after["warnings"] if f not in before["warnings"]]
    if added or len(after["warnings"]) != len(before["warnings"]):
        out["warnings"] = added
    for k in ("torch_threads", "cudnn_benchmark", "malloc_tuned", "forbidden"):
        if before[k] != after[k]:
            out[k] = [before[k], after[k]]
    return out

def drop_fatlib():
    for loaded in [m for m in sys.modules if m == "fatlib" or m.startswith("fatlib.")]:
        del sys.modules[loaded]

names = json.loads(sys.argv[1])
baseline = state()
problems = {}
for name in names:  # once, so that the third-party packages are loaded (their own import effects are theirs)
    try:
        importlib.import_module(name)
    except Exception as e:
        problems[name] = f"import failed: {type(e).__name__}: {e}"
for name in names:
    restore(baseline)
    drop_fatlib()  # each module is the first fatlib module imported, and its code runs again
    try:
        importlib.import_module(name)
    except Exception as e:
        problems[name] = f"import failed: {type(e).__name__}: {e}"
        continue
    changed = diff(baseline, state())
    if changed:
        problems[name] = changed
print(json.dumps(problems, default=repr))
"""


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # runs the command line
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_importing_any_module_changes_nothing_process_wide():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("FATLIB_NO_MALLOC_TUNING", None)
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(_modules())], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    problems = json.loads(out.stdout.strip().splitlines()[-1])
    assert problems == {}, json.dumps(problems, indent=1)[:5000]


def _import_graph() -> dict[str, set[str]]:
    modules = set(_modules())
    graph: dict[str, set[str]] = {}
    for name in modules:
        path = PACKAGE.parent / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = PACKAGE.parent / name.replace(".", "/") / "__init__.py"
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph = _import_graph()
    assert "fatlib.folds" in graph["fatlib.selection"] and "fatlib.folds" in graph["fatlib.stage_inputs"]
    assert "fatlib.train" not in graph["fatlib.selection"] and "fatlib.selection" not in graph["fatlib.train"]
    assert "fatlib.train" not in graph["fatlib.recipes"] and "fatlib.settings" in graph["fatlib.recipes"]
    cycles = _cycles(graph)
    assert [c for c in cycles if c not in KNOWN_CYCLES] == []


def test_no_argparse_outside_the_commands_package():
    """Domain modules hold no command-line code: every argparse use is in fatlib/commands/."""
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if "argparse" in p.read_text(encoding="utf-8") and p.parent.name != "commands")
    assert users == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_help_and_synth_import_no_torch(tmp_path):
    """Every command's --help, and `synth`, run without importing torch (a second or more saved each time)."""
    probe = r"""
import contextlib, io, json, sys
from fatlib.commands.main import build_parser, main
from fatlib.commands import COMMANDS
names = [n.replace("_", "-") for n in COMMANDS]
for name in names:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        build_parser().parse_args([name, "--help"])
after_help = "torch" in sys.modules
with contextlib.redirect_stdout(io.StringIO()):
    rc = main(["synth", sys.argv[1], "--n-classes", "2", "--n-curated", "4", "--n-noisy", "2", "--n-test", "2",
               "--max-seconds", "1"])
print(json.dumps({"help": after_help, "synth": "torch" in sys.modules, "rc": rc}))
"""
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "d")], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"help": False, "synth": False, "rc": 0}, res


def test_predict_help_constants_agree_with_tta():
    from fatlib import setting_rules, tta
    from fatlib.commands import predict, tag

    assert (predict.TTA_SCHEMES, predict.DEFAULT_STEP_FRAMES) == (tta.TTA_SCHEMES, tta.DEFAULT_STEP_FRAMES)
    assert setting_rules.TTA_SCHEMES == tag.TTA_CHOICES == tta.TTA_SCHEMES  # written out there: no torch for --help


def test_design_lists_every_module():
    design = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    missing = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py" and f"`{p.name}`" not in design]
    assert missing == [], f"docs/DESIGN.md has no row for {missing}"


def test_no_module_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert long == {}


def test_pyproject_and_requirements_agree():
    """pyproject.toml's dependencies are requirements.txt's first block plus torch (which scripts/setup_venv.sh
    installs itself), with the same lower bounds; nothing declared goes unused (tqdm was)."""
    import re

    from fatlib.recipes import _toml

    deps = _toml().loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    block = (ROOT / "requirements.txt").read_text().split("# notebooks and tests")[0]
    reqs = [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert sorted(d for d in deps if not d.startswith("torch")) == sorted(reqs)
    imports = {"iterative-stratification": "iterstrat", "soundfile": "soundfile"}
    source = "\n".join(p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py"))
    for req in reqs:
        name = re.split(r"[<>=]", req)[0]
        module = imports.get(name, name.replace("-", "_"))
        used = rf"\b(import|from) {module}\b|[\"']{module}[.\"']"  # import X, from X, require("X.y")
        assert re.search(used, source), f"{name} is declared but fatlib never imports it"
