"""Create the deployments of ``deployments/prefect.yaml`` on the Prefect API: ``python -m rungflow.deployments.deploy``.

The same names, parameters, work pool and cron schedules (with timezone) as ``prefect deploy
--prefect-file deployments/prefect.yaml --all``, which on prefect 3.8.8 with fastapi 0.154 creates
the first deployment and then fails its "any worker online?" check (the client sends
``limit: null``, the server refuses it with 422). The process worker runs each flow from this
checkout (``working_dir`` job variable).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rungflow.deployments.serve import HERE, deployment_specs

REPO = HERE.parent


def apply(names: Sequence[str] = (), working_dir: Path = REPO) -> dict[str, str]:
    """Create or update each deployment; returns ``{"flow/deployment": id}``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.schedules import Cron

    from rungflow.flows.retrain import retrain_flow

    created: dict[str, str] = {}
    for spec in deployment_specs():
        if names and spec["name"] not in names:
            continue
        pool = spec["work_pool"]
        with get_client(sync_client=True) as client:
            try:
                client.create_work_pool(WorkPoolCreate(name=pool["name"], type="process"))
            except ObjectAlreadyExists:
                pass
        schedules = [Cron(s["cron"], timezone=s["timezone"], active=s.get("active", True)) for s in spec.get("schedules", [])]
        deployment = retrain_flow.to_deployment(
            name=spec["name"], parameters=spec.get("parameters", {}), schedules=schedules, tags=spec.get("tags"),
            description=spec.get("description"), work_pool_name=pool["name"], work_queue_name=pool.get("work_queue_name"),
            job_variables={"working_dir": str(working_dir)},
        )
        created[f"rungflow-retrain/{spec['name']}"] = str(deployment.apply(work_pool_name=pool["name"]))
    return created


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rungflow.deployments.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="deployments to create (default: all in prefect.yaml)")
    args = parser.parse_args(argv)
    for name, deployment_id in apply(args.names).items():
        print(f"deployment {name}: {deployment_id}")


if __name__ == "__main__":
    main()
