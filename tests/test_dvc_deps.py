"""dvc.yaml's code deps are honest: every ``cagerisk`` module a stage imports, transitively, is a dep.

The import graph is grimp's (the library import-linter runs on), so imports inside functions count.
Packages whose ``__init__`` exports names lazily (``cagerisk.lazy``) import their modules by string;
those edges are read from the export maps. Importing ``a.b.c`` also runs ``a/__init__`` and
``a/b/__init__``, so parent packages count too. A dep covers a file when it is that file or a folder
above it.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import grimp
import pytest
import yaml

from cagerisk.cli import STAGES as COMMANDS

ROOT = Path(__file__).resolve().parents[1]
DVC_STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


@cache
def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("cagerisk", "pipelines")


@cache
def _lazy_maps() -> dict[str, dict[str, str]]:
    """package -> {name: module} of its lazy export map (string imports grimp cannot see)."""
    maps: dict[str, dict[str, str]] = {}
    for init in (ROOT / "src" / "cagerisk").rglob("__init__.py"):
        package = ".".join(init.relative_to(ROOT / "src").parent.parts)
        for node in ast.walk(ast.parse(init.read_text())):
            if isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) for k in node.keys):
                pairs = {k.value: v.value for k, v in zip(node.keys, node.values, strict=True) if isinstance(v, ast.Constant)}
                maps.setdefault(package, {}).update({k: v for k, v in pairs.items() if str(v).startswith("cagerisk.")})
    return {k: v for k, v in maps.items() if v}


@cache
def _lazy_edges(module: str) -> frozenset[str]:
    """Modules ``module`` reaches through lazy exports: ``from pkg import name`` -> the module behind name.

    ``import pkg`` (or ``pkg.name`` attribute use) cannot be narrowed, so it counts every module of the map.
    """
    maps = _lazy_maps()
    path = module_file(module)
    if not path.is_file():
        return frozenset()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in maps and not node.level:
            exports = maps[node.module]
            found.update(exports[a.name] for a in node.names if a.name in exports)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in maps and alias.asname:
                    found.update(maps[alias.name].values())
    return frozenset(found)


def module_file(module: str) -> Path:
    parts = module.split(".")
    base = ROOT / "src" if parts[0] == "cagerisk" else ROOT
    path = base.joinpath(*parts)
    return (path / "__init__.py") if path.is_dir() else path.with_suffix(".py")


def imported_modules(entry: str) -> set[str]:
    """Every first-party module ``entry`` imports, directly or not, with their parent packages."""
    graph = _graph()
    seen: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(m for m in graph.find_modules_directly_imported_by(module) if m.split(".")[0] in {"cagerisk", "pipelines"})
        todo.extend(_lazy_edges(module))
    return seen


def missing_deps(stage: str) -> list[str]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    deps = [Path(d) for d in spec.get("deps", []) if "${" not in str(d)]
    entry = COMMANDS[spec["cmd"].split()[1]]
    files = {module_file(m).relative_to(ROOT) for m in imported_modules(entry) | {"cagerisk.cli"}}
    return sorted(str(f) for f in files if not any(f == d or d in f.parents for d in deps))


def test_lazy_export_maps_are_seen():
    assert _lazy_maps()["cagerisk.radiomics"]["params_by_sequence"] == "cagerisk.radiomics.params"


def test_closure_follows_function_level_and_lazy_imports():
    closure = imported_modules("pipelines.cohort")
    assert "cagerisk.cohort" in closure and "cagerisk" in closure
    assert all(module_file(m).is_file() for m in closure), sorted(m for m in closure if not module_file(m).is_file())


@pytest.mark.parametrize("stage", DVC_STAGES)
def test_stage_deps_cover_every_module_it_imports(stage: str):
    missing = missing_deps(stage)
    assert not missing, f"dvc.yaml stage {stage!r} imports code it does not list in deps: {missing}"
