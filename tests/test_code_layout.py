"""The shape of the code: scripts are thin command lines over the library, and functions stay short.

Scripts (the repository root's *.py and data/<name>/prepare.py) parse a command line, call the
library and print; none imports another script, so tests, reproduce.py and users reach everything
through minibert/. Fine-tuning's functions stay under 60 lines (its loop is written out once);
nothing anywhere is longer than 80.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(ROOT.glob("*.py")) + sorted(ROOT.glob("data/*/prepare.py"))
SCRIPT_NAMES = {path.stem for path in ROOT.glob("*.py")}
LIBRARY = sorted((ROOT / "minibert").rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def function_lengths(path: Path) -> list[tuple[str, int]]:
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_script_imports_another_script(script):
    assert not imported_modules(script) & SCRIPT_NAMES


def test_the_library_imports_no_script():
    importers = {str(p.relative_to(ROOT)): imported_modules(p) & SCRIPT_NAMES for p in LIBRARY}
    assert {path: names for path, names in importers.items() if names} == {}


def test_functions_are_short():
    too_long = {}
    for path in LIBRARY + SCRIPTS:
        limit = 60 if "finetune" in path.parts else 80
        too_long.update({f"{path.relative_to(ROOT)}:{name}": n for name, n in function_lengths(path) if n > limit})
    assert too_long == {}


def test_train_py_is_a_thin_command_line():
    assert len((ROOT / "train.py").read_text().splitlines()) < 100
    assert not (ROOT / "train_multitask.py").exists()


def test_the_checks_see_the_scripts():
    """The checks above must not pass by looking at nothing."""
    assert {"train", "pretrain", "predict", "reproduce", "checkpoints_convert"} <= SCRIPT_NAMES
    assert len(SCRIPTS) > 8 and len(LIBRARY) > 40
    assert imported_modules(ROOT / "train.py") >= {"minibert"}
