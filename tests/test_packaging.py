"""What the package imports is declared in pyproject.toml; what only the benchmarks import is not a runtime need."""
from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(reqs) -> set:
    return {_norm(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in reqs}


def _imported_top_level(folder: Path) -> set:
    """Top-level module names imported anywhere under ``folder`` (lazy imports inside functions too)."""
    names = set()
    for f in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"eegloop"}


def test_every_third_party_import_is_a_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = _declared(project["dependencies"])
    dists = packages_distributions()
    missing = {}
    for mod in sorted(_imported_top_level(REPO / "eegloop")):
        provided_by = {_norm(d) for d in dists.get(mod, [])}
        assert provided_by, f"eegloop imports {mod}, which no installed distribution provides"
        if not provided_by & runtime:
            missing[mod] = sorted(provided_by)
    assert not missing, f"imported by eegloop but not in [project].dependencies: {missing}"


def test_benchmark_only_packages_are_an_extra_not_a_runtime_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = _declared(project["dependencies"])
    extras = {k: _declared(v) for k, v in project["optional-dependencies"].items()}
    dists = packages_distributions()
    used_by_package = {_norm(d) for m in _imported_top_level(REPO / "eegloop") for d in dists.get(m, [])}
    bench_only = {_norm(d) for m in _imported_top_level(REPO / "benchmarks") for d in dists.get(m, [])} \
        - used_by_package
    assert not bench_only & runtime, f"only the benchmarks import {sorted(bench_only & runtime)}"
    assert bench_only <= extras["bench"] | extras["test"], \
        f"benchmark imports missing from the bench extra: {sorted(bench_only - extras['bench'] - extras['test'])}"
