"""``pip install rungflow`` into a user's own environment: one import package, their versions left alone.

The wheel is built from this checkout and installed, without constraints, into a fresh venv that
already holds numpy 2, pandas 2, a current pyarrow and the CPU torch, as a data scientist's would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

USER_PACKAGES = {"numpy": "numpy>=2", "pandas": "pandas>=2,<3", "pyarrow": "pyarrow>=20", "torch": "torch==2.13.0"}

VERSIONS = f"import importlib.metadata as m, json; print(json.dumps({{n: m.version(n) for n in {sorted(USER_PACKAGES)!r}}}))"

SWEEP = """
import rungflow

config = rungflow.load_config("sweep.yaml")
result = rungflow.run_sweep(config, "run")
assert result["stop_reason"] == "schedule_complete", result["stop_reason"]
assert result["best"]["score"] > 0.5, result["best"]
print("SWEEP-OK", result["best"]["score"], result["ledger"]["trials_started"])
"""

CONFIG = """\
name: wheel-install
trainable: {kind: torch_mlp, options: {dataset: iris}}
search: {algorithm: random, seed: 0, num_trials: 3}
scheduler: {kind: sha, min_budget: 1, max_budget: 3, eta: 3}
budget: {max_gpu_hours: 1}
runtime: {kind: thread, max_concurrent: 2}
"""


# Byte-compiling every installed module (torch, ray, prefect) is most of pip's CPU time and nothing this test checks:
# the modules it imports compile on first use, as they would in a user's environment that skipped it.
PIP_QUIET = ("--quiet", "--no-compile")


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, f"{' '.join(args)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)], timeout=600)
    (path,) = out.glob("rungflow-*.whl")
    return path


def test_the_wheel_holds_one_top_level_package_and_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"rungflow", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for shipped in ("rungflow/deployments/prefect.yaml", "rungflow/examples/digits.yaml",
                    "rungflow/tasks/trainables/workers/autosklearn_worker.py", "rungflow/flows/cli.py",
                    "rungflow/budgets/rungs.py", "rungflow/tasks/automl_portfolio.json"):
        assert shipped in names, shipped


# Its minutes go to pip filling a fresh venv, beside the suite's two processes on 2 cores; each step has a timeout of
# its own (below), so the suite-wide 600 s would only cut a slow install short, never catch a hang.
@pytest.mark.timeout(2400)
def test_install_into_a_users_numpy2_env_changes_none_of_their_versions_and_sweeps(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "user-env"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    py = str(venv / "bin" / "python")
    # Every pip call reaches the same index this machine uses (its pip config); no constraints file: a user has none.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_CONSTRAINT")}
    _run([py, "-m", "pip", "install", *PIP_QUIET, *USER_PACKAGES.values()], env=env, timeout=900)
    before = json.loads(_run([py, "-c", VERSIONS], env=env).stdout)
    assert before["numpy"].startswith("2.") and int(before["pyarrow"].split(".")[0]) >= 20

    _run([py, "-m", "pip", "install", *PIP_QUIET, f"rungflow[torch] @ {wheel.as_uri()}"], env=env, timeout=900)
    after = json.loads(_run([py, "-c", VERSIONS], env=env).stdout)
    assert after == before

    work = tmp_path / "user-project"  # outside the checkout: nothing of the repository on sys.path
    work.mkdir()
    for name in ("tasks", "flows", "budgets", "deployments"):
        probe = subprocess.run([py, "-c", f"import {name}"], cwd=work, env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and "No module named" in probe.stderr, name
    pure = _run([py, "-c", "import sys, rungflow.budgets.rungs; print(sorted({m.split('.')[0] for m in sys.modules} & "
                            "{'prefect', 'ray', 'torch', 'pydantic', 'optuna'}))"], cwd=work, env=env)
    assert pure.stdout.strip() == "[]"

    plan = _run([str(venv / "bin" / "rungflow"), "plan", "examples/digits.yaml"], cwd=work, env=env)  # the shipped example
    assert "plan: digits-mlp" in plan.stdout

    (work / "sweep.yaml").write_text(CONFIG)
    (work / "sweep.py").write_text(SWEEP)
    env.update(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_HOME=str(tmp_path / "prefect-home"))
    env.pop("PREFECT_API_URL", None)
    out = _run([py, "sweep.py"], cwd=work, env=env, timeout=600)
    assert "SWEEP-OK" in out.stdout
