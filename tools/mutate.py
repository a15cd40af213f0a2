"""`make mutate`: mutation testing (mutmut 3) of the formulas behind the reported numbers.

mutmut is configured in pyproject.toml: ``[tool.mutmut]`` (its own keys: what to copy, which modules,
which fast tests) and ``[tool.warmstart.mutate]`` (which functions of those modules count). Two things
keep mutmut 3 from running on the checkout as it is, so this script stages a copy and runs it there:

* mutmut names a module by its file's path (stripping only ``src/``) and matches that with the
  module name the tests import: ``pkg/warmstart/components/inits.py`` would be ``pkg.warmstart.components.inits``, not
  ``warmstart.components.inits``. The copy puts the package at ``src/warmstart`` (build/mutmut/src/warmstart).
* mutmut mutates no decorated function (a decorator could run twice), and every init strategy, loss
  term, probe and report is registered by a decorator (``@register_strategy(...)``), as is
  ``StopSpec.cap_reason`` (``@property``). In the copy, the selected functions' decorators become
  plain calls after the definition (``warm_start = register_strategy("warm", ...)(warm_start)``),
  which registers the same function (mutmut's trampoline, which runs the active mutant).

Functions of the listed modules that are not selected get ``# pragma: no mutate block`` in the copy
(``"fit:<regex>"`` keeps only fit's lines that match; the others get ``# pragma: no mutate``, which
``do_not_mutate_patterns`` extends to continuation lines). Nothing outside build/mutmut is written. Usage: ``python tools/mutate.py [--fresh] [mutmut run arguments]``;
after the run it prints mutmut's results and the score.
"""
from __future__ import annotations

import argparse
import ast
import io
import os
import re
import shutil
import subprocess
import sys
import time
import tokenize
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: mutmut brings the toml package there
    import toml as tomllib

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "mutmut"
PACKAGE = "warmstart"


def header_colon_line(lines: list[str], node: ast.AST) -> int:
    """The 1-based line of the ':' that ends a def/class header (the first ':' outside brackets)."""
    source = "".join(lines[node.lineno - 1:node.body[0].lineno])
    depth = 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.OP:
            if tok.string in "([{":
                depth += 1
            elif tok.string in ")]}":
                depth -= 1
            elif tok.string == ":" and depth == 0:
                return node.lineno + tok.start[0] - 1
    raise ValueError(f"no header colon for {getattr(node, 'name', node)}")


def commentable_lines(source: str) -> set[int]:
    """Lines that end with a NEWLINE or NL token: a comment may be appended to them (not inside a string)."""
    return {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type in (tokenize.NEWLINE, tokenize.NL)}


def add_comment(line: str, comment: str) -> str:
    """The line with ``comment`` at its end (after any comment it has: mutmut looks for '# pragma:')."""
    return f"{line.rstrip()}  {comment}\n"


def stage_module(source: str, selected: list[str]) -> tuple[str, list[str]]:
    """The module with only the ``selected`` functions mutable and their decorators made plain calls.
    Returns (new source, the selections that matched nothing)."""
    if selected == ["*"]:
        selected = None  # every function of the module
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    ok_lines = commentable_lines(source)
    wanted: dict[str, str | None] = {}
    for item in selected or ():
        name, _, pattern = item.partition(":")
        wanted[name] = pattern or None
    found: set[str] = set()
    append: dict[int, str] = {}  # line -> comment to append
    drop: set[int] = set()  # decorator lines to delete
    insert_after: dict[int, list[str]] = {}  # line -> lines to insert after it

    def visit(body, prefix: str, everything: bool):
        for node in body:
            if isinstance(node, ast.ClassDef):
                qual = prefix + node.name
                if everything or qual in wanted:
                    found.add(qual)
                    visit(node.body, qual + ".", True)
                elif any(k.startswith(qual + ".") for k in wanted):
                    visit(node.body, qual + ".", False)
                else:
                    append[header_colon_line(lines, node)] = "# pragma: no mutate block"
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qual = prefix + node.name
                if not everything and qual not in wanted:
                    append[header_colon_line(lines, node)] = "# pragma: no mutate block"
                    continue
                found.add(qual)
                pattern = wanted.get(qual)
                if pattern:
                    regex = re.compile(pattern)
                    for n in range(node.lineno, node.end_lineno + 1):
                        if n in ok_lines and not regex.search(lines[n - 1]):
                            append[n] = "# pragma: no mutate"
                plain = [d for d in node.decorator_list
                         if not (isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod"))]
                if plain:
                    if len(plain) != len(node.decorator_list):
                        raise SystemExit(f"{qual}: cannot mix staticmethod/classmethod with other decorators")
                    indent = " " * node.col_offset
                    call = node.name
                    for d in reversed(plain):  # @a @b def f -> f = a(b(f))
                        call = f"({ast.get_source_segment(source, d)})({call})"
                    for d in plain:
                        drop.update(range(d.lineno, d.end_lineno + 1))
                    insert_after.setdefault(node.end_lineno, []).append(f"{indent}{node.name} = {call}\n")

    visit(tree.body, "", selected is None)
    out = []
    for n, line in enumerate(lines, 1):
        if n in drop:
            continue
        if n in append:
            if n not in ok_lines:
                raise SystemExit(f"line {n} cannot take a comment: {line!r}")
            line = add_comment(line, append[n])
        out.append(line)
        out.extend(insert_after.get(n, []))
    missing = [] if selected is None else [k for k in wanted if k not in found]
    return "".join(out), missing


def write_if_changed(path: Path, text: str) -> None:
    """Keep the file (and its mtime, which mutmut's incremental runs compare) when nothing changed."""
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def module_key(relative: Path) -> str:
    """A module's key in ``[tool.warmstart.mutate]``: its dotted path inside the package
    (``components.inits``), since the layers hold modules of the same file name."""
    return ".".join(relative.with_suffix("").parts)


def stage(config: dict, selection: dict[str, list[str]]) -> None:
    source_dir = ROOT / "pkg" / PACKAGE
    listed = {module_key(Path(p).relative_to(f"src/{PACKAGE}")) for p in config["only_mutate"]}
    if listed != set(selection):
        raise SystemExit(f"pyproject.toml: [tool.mutmut] only_mutate lists {sorted(listed)} but "
                         f"[tool.warmstart.mutate] selects {sorted(selection)}: list each module in both")
    target = STAGE / "src" / PACKAGE
    sources = sorted(source_dir.rglob("*.py"))
    for path in sources:
        text, key = path.read_text(), module_key(path.relative_to(source_dir))
        if key in selection:
            text, missing = stage_module(text, selection[key])
            if missing:
                raise SystemExit(f"[tool.warmstart.mutate] {key}: no function {missing}")
            compile(text, str(path), "exec")  # the staged copy must still be valid Python
        write_if_changed(target / path.relative_to(source_dir), text)
    for stale in set(target.rglob("*.py")) - {target / p.relative_to(source_dir) for p in sources}:
        stale.unlink()
    tests = STAGE / "tests"
    if tests.exists():
        shutil.rmtree(tests)
    shutil.copytree(ROOT / "tests", tests, ignore=shutil.ignore_patterns("__pycache__", "cluster"))
    write_if_changed(STAGE / "pyproject.toml", (ROOT / "pyproject.toml").read_text())
    for name in config.get("also_copy", []):
        source, copy = ROOT / name, STAGE / name
        if source.is_dir():
            shutil.copytree(source, copy, dirs_exist_ok=True)
        else:
            write_if_changed(copy, source.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="forget earlier results (a full run)")
    parser.add_argument("--stage-only", action="store_true", help="write build/mutmut and stop")
    args, mutmut_args = parser.parse_known_args()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    config = pyproject["tool"]["mutmut"]
    selection = pyproject["tool"]["warmstart"]["mutate"]
    if args.fresh and STAGE.exists():
        shutil.rmtree(STAGE)
    stage(config, selection)
    if args.stage_only:
        return 0
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.monotonic()
    run = subprocess.run([str(mutmut), "run", *mutmut_args], cwd=STAGE, env=env)
    elapsed = time.monotonic() - started
    results = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=STAGE, env=env,
                             capture_output=True, text=True)
    statuses: dict[str, int] = {}
    survivors = []
    for line in results.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            statuses[status] = statuses.get(status, 0) + 1
            if status != "killed":
                survivors.append(line.strip())
    total = sum(statuses.values())
    killed = statuses.get("killed", 0)
    print("\n".join(survivors))
    if total:
        print(f"\nmutation score: {killed} killed of {total} ({100 * killed / total:.1f}%); "
              + ", ".join(f"{v} {k}" for k, v in sorted(statuses.items()) if k != "killed")
              + f"; {elapsed / 60:.1f} min. Inspect one: cd {STAGE.relative_to(ROOT)} && mutmut show <name>")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
