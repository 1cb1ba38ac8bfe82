"""The engine's layers point one way: no import circle, and no call back up to actions.

The direction is actions -> runtime -> context -> launch -> runners -> execution
(-> models, progress, publish, ...). Imports are read from the source with
``ast``, those inside functions included, so a deferred import can't hide a circle.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import liveprogress

PACKAGE = Path(liveprogress.__file__).parent

#: The engine, and the client-facing layer on top of it.
ENGINE = [
    "context",
    "eta",
    "execution",
    "finalwrites",
    "history",
    "launch",
    "logstore",
    "queueing",
    "recovery",
    "runners",
    "runners.inprocess",
    "runners.tasks",
    "runtime",
    "writebehind",
]
#: Other engines' adapters, on top of the engine as actions is. Each imports its engine,
#: all of them in the test extra: Django's Tasks is in Django 6, and the backport in
#: requirements-scale.txt for 5.2.
ADAPTERS = [
    "engines.base",
    "engines.celery",
    "engines.celery_progress",
    "engines.celery_progress.views",
    "engines.django_tasks",
    "engines.dramatiq",
    "engines.rq",
]
MODULES = ["actions", *ENGINE, *ADAPTERS]


def source_of(module: str) -> Path:
    path = PACKAGE.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports_of(module: str) -> set[str]:
    """The liveprogress modules ``module`` imports, anywhere in its source, as
    dotted names relative to the package (``from . import conf`` is ``conf``)."""
    path = source_of(module)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
            found |= {".".join(name[1:]) for name in names if name[0] == "liveprogress"}
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        named = node.module.split(".") if node.module else []
        if node.level:
            target = [*package[: len(package) - node.level + 1], *named]
        elif named[:1] == ["liveprogress"]:
            target = named[1:]
        else:
            continue
        found.add(".".join(target))
        # ``from . import conf`` names a module; ``from .x import y`` a member of x,
        # unless x is a package with a module y.
        for alias in node.names:
            candidate = ".".join([*target, alias.name])
            if source_of(candidate).exists():
                found.add(candidate)
    return {name for name in found if name}


def graph() -> dict[str, set[str]]:
    return {module: imports_of(module) & set(MODULES) - {module} for module in MODULES}


def test_the_import_reader_finds_the_imports():
    assert "runtime" in imports_of("actions")
    assert "runtime" in imports_of("runners.tasks")
    assert {"execution", "writebehind"} <= imports_of("runners.inprocess")


def test_the_engine_has_no_import_circle():
    edges = graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            circle = path[path.index(module) :] + [module]
            pytest.fail("import circle: " + " -> ".join(circle))
        if module in done:
            return
        for imported in sorted(edges[module]):
            visit(imported, [*path, module])
        done.add(module)

    for module in MODULES:
        visit(module, [])


def test_the_engine_never_imports_the_client_facing_actions():
    for module in ENGINE:
        assert "actions" not in imports_of(module), module


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_on_its_own(module):
    """In a fresh interpreter after django.setup(): no order of imports is needed."""
    code = f"import django; django.setup(); import liveprogress.{module}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)  # noqa: S603
