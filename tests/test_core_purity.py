"""The `budgets` core imports only the standard library and numpy (optuna lazily): never prefect, ray or torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULES = sorted(
    "rungflow.budgets" if p.name == "__init__.py" else f"rungflow.budgets.{p.stem}" for p in (REPO / "budgets").glob("*.py")
)
FORBIDDEN = ("prefect", "ray", "torch", "optuna")
ALLOWED_THIRD_PARTY = {"numpy"}

PROBE = """
import json, sys
before = set(sys.modules)
import importlib
importlib.import_module({module!r})
loaded = {{}}
for name in sorted(set(sys.modules) - before):
    loaded[name] = getattr(sys.modules[name], "__file__", None) or ""
print(json.dumps(loaded))
"""


def _import_in_fresh_interpreter(module: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_budgets_module_is_listed() -> None:
    assert {"rungflow.budgets.space", "rungflow.budgets.searchers", "rungflow.budgets.tpe", "rungflow.budgets.rungs", "rungflow.budgets.schedulers",
            "rungflow.budgets.ledger", "rungflow.budgets.controller"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_core_module_imports_no_framework(module: str) -> None:
    loaded = _import_in_fresh_interpreter(module)
    roots = {name.split(".")[0] for name in loaded}
    for forbidden in FORBIDDEN:
        assert forbidden not in roots, f"importing {module} loaded {forbidden}"
    # Third-party: anything loaded from an installed distribution (builtins such as cython_runtime have no file).
    third_party = {
        name.split(".")[0]
        for name, path in loaded.items()
        if "site-packages" in path or "dist-packages" in path
    }
    assert third_party <= ALLOWED_THIRD_PARTY, f"{module} pulls in {sorted(third_party - ALLOWED_THIRD_PARTY)}"


def test_all_core_modules_together() -> None:
    probe = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + f"print(sorted(n for n in {FORBIDDEN!r} if n in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_optuna_loads_only_when_a_tpe_searcher_is_built() -> None:
    probe = (
        "import sys\n"
        "from rungflow.budgets.search_registry import make_searcher\n"
        "from rungflow.budgets.space import FloatParam, SearchSpace\n"
        "space = SearchSpace((FloatParam('x', 0.0, 1.0),))\n"
        "make_searcher('random', space).suggest(2)\n"
        "make_searcher('grid', space).suggest(2)\n"
        "a = 'optuna' in sys.modules\n"
        "make_searcher('tpe', space).suggest(1)\n"
        "b = 'optuna' in sys.modules\n"
        "print(a, b, any(n in sys.modules for n in ('prefect', 'ray', 'torch')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "False"]
