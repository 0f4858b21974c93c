"""The house stays findable (issue 26): no import cycle, no module importing back up from its own package's
``__init__``, ``__init__`` files that only re-export, no module over 700 lines, no function over 80 lines (the
Alembic migrations aside). Read from the source with :mod:`ast`; every import counts, function-level ones too."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "eegloop"
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_INIT_CODE_LINES = 700, 80, 60


def _modules() -> dict[str, tuple[Path, bool, ast.Module]]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_init else parts)] = (path, is_init, ast.parse(path.read_text()))
    return out


def _imports(name: str, is_init: bool, tree: ast.Module, known: set) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its body."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".") if is_init else name.split(".")[:-1]
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{a.name}" for a in node.names} & known
            found |= subs or ({target} & known)
    found.discard(name)
    return found


def test_no_import_cycle_and_no_import_back_up_from_the_own_package():
    mods = _modules()
    graph = {m: _imports(m, i, t, set(mods)) for m, (_, i, t) in mods.items()}
    upward = [(m, d) for m, (_, is_init, _) in mods.items() if not is_init and "." in m
              for d in graph[m] if d == m.rsplit(".", 1)[0]]
    assert not upward, f"modules importing their own package's __init__: {upward}"
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_init_files_only_re_export_and_modules_stay_small():
    too_long, fat_inits = [], []
    for name, (path, is_init, tree) in _modules().items():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_MODULE_LINES:
            too_long.append((name, len(lines)))
        if is_init:
            doc = ast.get_docstring(tree)
            code = sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))
            code -= len(doc.splitlines()) if doc else 0
            if code > MAX_INIT_CODE_LINES:
                fat_inits.append((name, code))
            defined = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
            assert not defined, f"{name}/__init__.py defines classes {defined}: it should only re-export"
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"
    assert not fat_inits, f"__init__.py over {MAX_INIT_CODE_LINES} lines of code: {fat_inits}"


def test_no_function_over_80_lines():
    long = [(f"{path.relative_to(PKG.parent)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1)
            for _, (path, _, tree) in _modules().items() if "migrations" not in path.parts
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {sorted(long, key=lambda x: -x[1])}"
