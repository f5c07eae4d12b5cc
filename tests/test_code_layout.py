"""The shape of the code: scripts are thin command lines over the library, and functions stay short.

Scripts (the repository root's *.py and data/<name>/prepare.py) parse a command line, call the
library and print; none imports another script, so tests, reproduce.py and users reach everything
through minibert/. Fine-tuning's functions stay under 60 lines (its loop is written out once);
nothing anywhere is longer than 80. No test module imports another: what tests share is in
tests/helpers.py and tests/conftest.py. No benchmark imports another: what benchmarks share is in
the library or in a benchmarks helper module named in BENCHMARK_HELPERS.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(ROOT.glob("*.py")) + sorted(ROOT.glob("data/*/prepare.py"))
SCRIPT_NAMES = {path.stem for path in ROOT.glob("*.py")}
LIBRARY = sorted((ROOT / "minibert").rglob("*.py"))
TESTS = sorted((ROOT / "tests").glob("*.py"))  # test modules, conftest.py, helpers.py, fixture writers
TEST_MODULE_NAMES = {path.stem for path in TESTS if path.stem.startswith("test_")}
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
BENCHMARK_HELPERS = {"bench_common"}  # modules of benchmarks/ that hold shared benchmark code, not a benchmark
BENCHMARK_NAMES = {path.stem for path in BENCHMARKS} - BENCHMARK_HELPERS


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


def test_no_test_module_imports_another():
    importers = {path.name: imported_modules(path) & TEST_MODULE_NAMES for path in TESTS}
    assert {path: names for path, names in importers.items() if names} == {}


@pytest.mark.xfail(strict=True, reason="benchmarks/gpu_mfu.py still imports other benchmarks (encoder_speed, "
                   "gpu_speed, pretrain_speed), as do gpu_speed.py, last_layer_speed.py and pretrain_speed.py "
                   "(encoder_speed) and varlen_tiles.py (gpu_attention)")
def test_no_benchmark_imports_another():
    importers = {path.name: imported_modules(path) & BENCHMARK_NAMES for path in BENCHMARKS}
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
    assert len(TEST_MODULE_NAMES) > 30 and {"conftest", "helpers"} <= {path.stem for path in TESTS}
    assert len(BENCHMARK_NAMES) > 8 and imported_modules(ROOT / "benchmarks" / "gpu_mfu.py") >= {"minibert"}
    assert imported_modules(ROOT / "train.py") >= {"minibert"}
