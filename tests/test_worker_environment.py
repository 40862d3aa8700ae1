"""A library's worker starts its own Ray, whatever Ray the machine has.

AutoGluon's ``best_quality`` calls a bare ``ray.init()``; in a worker that joined a dead cluster's address file it
waited on the GCS until the worker's timeout (every ``best_quality`` fit of a benchmark run failed at 360 s).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rungflow.tasks.trainables.external import worker_environment

# What AutoGluon's dynamic-stacking sub-fit does, then where the Ray it got keeps its session.
BARE_INIT = """
import ray
ray.init(logging_level="ERROR", log_to_driver=False, include_dashboard=False, num_cpus=1)
print(ray.get_runtime_context().gcs_address)
print(ray._private.worker.global_worker.node.get_session_dir_path())
ray.shutdown()
"""


def test_a_bare_ray_init_in_a_worker_starts_its_own_ray_beside_a_dead_clusters_address():
    # Short: Ray's socket paths under its temp dir must fit in 107 characters.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rw", dir="/tmp"))
    try:
        # A cluster that crashed leaves its address behind; nothing listens there.
        (ray_tmp / "ray_current_cluster").write_text("127.0.0.1:9")
        env = worker_environment()
        env["RAY_TMPDIR"] = str(ray_tmp)
        proc = subprocess.run([sys.executable, "-c", BARE_INIT], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        gcs_address, session_dir = proc.stdout.split()[-2:]
        assert gcs_address != "127.0.0.1:9"
        # Its own instance: the session lives under the worker's Ray temp dir, not another cluster's.
        assert Path(session_dir).resolve().is_relative_to(ray_tmp.resolve())
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
