"""The house's rules, checked on the source: few modules at the top, folders for systems, no import of the
package inside a function, no private name imported from another module, engines below scoring, options
declared once, the update visible in the training loop, and functions one can read in a screen or two."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "charrnn"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
MAX_FUNCTION_LINES = 60


def _tree(path):
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported_modules(path):
    """(module imported, names, line, inside a function) for each charrnn import of ``path``, made absolute."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    tree, found = _tree(path), []
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(node) for f in functions for node in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join((*base, node.module) if node.module else base)
            if module.split(".")[0] == "charrnn":
                found.append((module, [a.name for a in node.names], node.lineno, id(node) in inner))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno, id(node) in inner) for a in node.names if a.name.startswith("charrnn")]
    return found


def test_at_most_six_modules_lie_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 6, f"modules directly in charrnn/: {', '.join(top)}; give a system a folder"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_of_the_package_are_at_the_top_and_public(path):
    for module, names, line, inside in _imported_modules(path):
        assert not inside, f"{path.name}:{line} imports {module} inside a function"
        private = [n for n in names if n.startswith("_") and module != "charrnn"]
        assert not private, f"{path.name}:{line} imports private {', '.join(private)} from {module}"


def test_engines_score_through_the_models_not_through_inference():
    for path in (PACKAGE / "engines").glob("*.py"):
        used = [m for m, *_ in _imported_modules(path) if m.startswith(("charrnn.inference", "charrnn.training"))]
        assert not used, f"engines/{path.name} imports {', '.join(used)}: engines sit below training and inference"


@pytest.mark.parametrize("option", ["--hidden-size", "--max-time", "--random-seed", "--temperature", "--model"])
def test_shared_options_are_declared_once(option):
    cli = PACKAGE / "cli"
    name = option[2:].replace("-", "_")
    declared = [f"{p.name}" for p in cli.glob("*.py")
                for _ in re.finditer(rf'click\.option\(\s*"{option}"|^\s*"{name}": \{{', p.read_text(), re.M)]
    assert len(declared) == 1, f"{option} is declared in {declared or 'no module'}; declare it once in cli/options.py"


def test_the_training_step_shows_the_update():
    """The loop itself reads finite? -> clip -> update -> average (no guard or engine hides the order)."""
    source = ast.get_source_segment((PACKAGE / "training" / "loop.py").read_text(),
                                    next(n for n in ast.walk(_tree(PACKAGE / "training" / "loop.py"))
                                         if isinstance(n, ast.FunctionDef) and n.name == "_train_step"))
    calls = [source.index(call) for call in ("engine.finite(", "engine.clip(", "engine.update(",
                                             "engine.update_average(")]
    assert calls == sorted(calls)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_longer_than_two_screens(path):
    for node in ast.walk(_tree(path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name} has {lines} lines"


def test_pytest_says_why_tests_were_skipped():
    """pytest -q lists each skipped test's reason (-rs), so a missing optional package is seen."""
    settings = (PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    addopts = re.search(r'^addopts = "([^"]*)"', settings, flags=re.MULTILINE)
    assert addopts and "-rs" in addopts.group(1).split()
