"""The library's layering: no import cycle, every error class in one module, and planning (what parsing
the Snakefile does) loads neither torch nor numpy, plotting or data-frame libraries."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "pkg" / "warmstart"
REPO = PKG.parents[1]


def module_imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level (imports inside functions are lazy)."""
    graph = {}
    for path in PKG.glob("*.py"):
        name = path.stem
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.add(node.module.split(".")[0] if node.module else "")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("warmstart."):
                deps.add(node.module.split(".")[1])
        graph[name] = deps - {""}
    return graph


def test_the_package_has_no_import_cycle():
    graph = module_imports()
    state: dict[str, int] = {}

    def visit(node, path):
        if state.get(node) == 1:
            raise AssertionError(f"import cycle: {' -> '.join(path + [node])}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in graph.get(node, ()):
            visit(dep, path + [node])
        state[node] = 2

    for module in graph:
        visit(module, [])
    # the spec knows no registry: it imports nothing but the errors
    assert graph["spec"] == {"errors"} and graph["errors"] == set() and graph["registry"] == {"errors"}


def test_every_error_class_is_defined_in_errors_py():
    defined = {}
    for path in PKG.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                defined[node.name] = path.name
    assert defined and set(defined.values()) == {"errors.py"}, defined


def test_planning_a_config_loads_no_torch_numpy_plotting_or_data_frame_module():
    code = f"""
import sys, yaml
sys.path.insert(0, {str(REPO / 'pkg')!r})
# what the Snakefile and workflow/rules/common.smk import, then the plan they build
import warmstart.config, warmstart.errors, warmstart.init, warmstart.io, warmstart.plan_io, warmstart.spec
from warmstart.experiments import plan_blocks, plan_experiments
from warmstart.reports import REPORTS
config = yaml.safe_load(open({str(REPO / 'config.yaml')!r}))
plan = plan_experiments(config)
plan_blocks(plan, config["stack_seeds"])
for spec in plan.runs.values():
    warmstart.plan_io.spec_json(spec)
    warmstart.init.STRATEGIES[spec.init.strategy].parent_files(spec.init.options)
heavy = sorted(set(m.split(".")[0] for m in sys.modules) & set(("torch", "numpy", "matplotlib", "pandas",
                                                                 "seaborn", "torchvision", "scipy", "pyarrow")))
print(heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
