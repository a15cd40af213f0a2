"""The library's layering, as docs/layout.md draws it: six layers, each importing only from itself and the
layers below it (also inside functions); no import cycle; every error class in one module; modules and
functions of a size a reader can hold; and planning (what parsing the Snakefile does) loads neither torch
nor numpy, plotting or data-frame libraries."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "pkg" / "warmstart"
REPO = PKG.parents[1]
# lowest first: a module may import from its own layer and the layers before it
LAYERS = ("core", "components", "engine", "reports", "plan", "jobs")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def modules() -> dict[str, Path]:
    """Dotted module name (``warmstart.core.spec``) -> its file."""
    found = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(path: Path, name: str) -> set[str]:
    """The package modules ``name`` (at ``path``) imports anywhere in its file: at module level and inside
    functions, since a lazy import is as much a dependency as an eager one."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("warmstart"):
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("warmstart"))
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imported(path, name) if m in mods and m != name} for name, path in mods.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_lives_in_a_layer():
    outside = sorted(m for m in modules() if m != "warmstart" and layer(m) not in LAYERS)
    assert not outside, f"modules outside the layers {LAYERS}: {outside}"


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for module, deps in import_graph().items():
        if layer(module) is None:
            continue
        for dep in deps:
            if layer(dep) is not None and LAYERS.index(layer(dep)) > LAYERS.index(layer(module)):
                upward.append(f"{module} -> {dep}")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    # a package's __init__ that only gathers its modules is not a dependency of them
    state: dict[str, int] = {}

    def visit(node, path):
        if state.get(node) == 1:
            raise AssertionError(f"import cycle: {' -> '.join(path + [node])}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in graph.get(node, ()):
            if not node.startswith(dep + "."):  # importing a module imports its package first: no edge
                visit(dep, path + [node])
        state[node] = 2

    for module in graph:
        visit(module, [])


def test_the_breaking_of_a_rule_is_seen():
    """The walker sees a lazy relative import, an upward one and a cycle (so the tests above can fail)."""
    code = "def f():\n    from ..jobs import runs\n    from . import other\n"
    path = PKG / "engine" / "_probe_.py"
    try:
        path.write_text(code)
        deps = imported(path, "warmstart.engine._probe_")
    finally:
        path.unlink()
    assert {"warmstart.jobs", "warmstart.jobs.runs", "warmstart.engine.other"} <= deps


def test_no_module_or_function_is_longer_than_a_reader_can_hold():
    long_modules, long_functions = [], []
    for name, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {lines} lines")
    assert not long_modules and not long_functions, "\n".join(long_modules + long_functions)


def test_every_error_class_is_defined_in_core_errors():
    defined = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                defined[node.name] = name
    assert defined and set(defined.values()) == {"warmstart.core.errors"}, defined


def workflow_imports() -> list[str]:
    """The ``import`` lines of the Snakefile and workflow/rules/*.smk that name the library."""
    lines = []
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        text = path.read_text()
        # a parenthesised import spans lines: join them first
        for match in re.finditer(r"^[ \t]*(from warmstart[\w.]* import (?:\([^)]*\)|[^\n]*)|import warmstart[\w.]*)",
                                 text, flags=re.M):
            lines.append(" ".join(match.group(1).split()))
    return lines


def test_planning_a_config_loads_no_torch_numpy_plotting_or_data_frame_module():
    imports = workflow_imports()
    assert imports, "the workflow imports nothing from the library?"
    code = "\n".join([
        "import sys, yaml",
        f"sys.path.insert(0, {str(REPO / 'pkg')!r})",
        *imports,
        "from warmstart.plan.config_check import build_plan",
        f"config = yaml.safe_load(open({str(REPO / 'config.yaml')!r}))",
        f"build_plan(config, {str(REPO / 'workflow' / 'schemas' / 'config.schema.yaml')!r})",
        "heavy = sorted(set(m.split('.')[0] for m in sys.modules) & {'torch', 'numpy', 'matplotlib', 'pandas',"
        " 'seaborn', 'torchvision', 'scipy', 'pyarrow'})",
        "print(heavy)",
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_map_names_every_module_and_no_module_that_is_gone():
    """docs/layout.md is the map a newcomer reads: every module of the package is in it, by its path, and
    every `pkg/warmstart`-relative path it names exists."""
    text = (REPO / "docs" / "layout.md").read_text()
    named = set(re.findall(r"`((?:core|components|engine|reports|plan|jobs)/[\w/]*?(?:\.py|/))`", text))
    missing = []
    for path in PKG.rglob("*.py"):
        relative = path.relative_to(PKG).as_posix()
        in_a_listed_package = any(relative.startswith(n) for n in named if n.count("/") > 1)
        layer_init = relative.count("/") == 1 and path.name == "__init__.py"  # the layer's own row
        if "/" in relative and not (relative in named or in_a_listed_package or layer_init):
            missing.append(relative)
    gone = sorted(n for n in named if not (PKG / n).exists())
    assert not missing and not gone, f"not on the map: {sorted(missing)}; on the map but gone: {gone}"
