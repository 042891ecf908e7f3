"""Nightly hindsight run as an Airflow DAG (Airflow 3; fallback imports for 2.x, not tested there).

One task runs `hindsight run` on the day's logs, a second exports the published dataset for
Axolotl. hindsight's exit status decides what Airflow does:

- 0: published (the audit passed);
- 4: the quality guard refused the publish (contract violation or drift against the previous
  night; readers still see the previous manifest): the task fails **without retries**, a person
  looks at `audit_report.txt` and reruns with `--accept-drift` if the drift is wanted;
- 75: the dataset is locked by another run, or a sharded run is not finished: retried;
- anything else: failed, retried by the task's `retries`.

Lineage: with Airflow's OpenLineage provider configured, Airflow sends the task's events and
hindsight sends its own run's, with the task as parent (`$OPENLINEAGE_PARENT_ID`, from the
provider's `lineage_parent_id` macro) to the same backend (`$OPENLINEAGE_URL`, or the file or URL
in `HINDSIGHT_LINEAGE_ARGS`).

Settings (Airflow Variables, with defaults for a local try): `hindsight_bin`,
`hindsight_pipeline`, `hindsight_output`, `hindsight_export`, `hindsight_args` (extra flags).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.sdk import Variable, dag, get_current_context, task
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task
    from airflow.models import Variable
    from airflow.operators.python import get_current_context

from airflow.exceptions import AirflowException, AirflowFailException

# hindsight's exit statuses (README, "Exit codes").
GUARD = 4
TEMPORARY = 75


def setting(name: str, default: str) -> str:
    return Variable.get(name, default=os.environ.get(name.upper(), default))


def run_hindsight(args: list[str], extra_env: dict[str, str] | None = None) -> None:
    command = [setting("hindsight_bin", "hindsight"), *args]
    print("running:", shlex.join(command), flush=True)
    code = subprocess.run(command, env={**os.environ, **(extra_env or {})}).returncode
    if code == GUARD:
        raise AirflowFailException(
            "hindsight refused to publish (audit or drift guard, exit 4); the previous manifest is "
            "kept: read audit_report.txt in the dataset, rerun with --accept-drift if it is wanted"
        )
    if code == TEMPORARY:
        raise AirflowException("hindsight: dataset locked or sharded run not finished (exit 75); retrying")
    if code != 0:
        raise AirflowException(f"hindsight exited with status {code}")


@dag(
    dag_id="hindsight_nightly",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one run per dataset: a second would exit 75 on the run lock
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["hindsight", "self-distillation"],
)
def hindsight_nightly():
    @task(execution_timeout=timedelta(hours=6))
    def score() -> str:
        output = setting("hindsight_output", "out/nightly")
        ti = get_current_context()["ti"]
        env = {}
        try:  # the OpenLineage provider's macro: this task as the parent of hindsight's run
            from airflow.providers.openlineage.plugins.macros import lineage_parent_id

            env["OPENLINEAGE_PARENT_ID"] = lineage_parent_id(ti)
        except ImportError:
            pass
        run_hindsight(
            [
                "run",
                setting("hindsight_pipeline", "pipelines/chat_logs.toml"),
                "--output",
                output,
                "--no-progress",
                *shlex.split(setting("hindsight_args", "")),
            ],
            env,
        )
        return output

    @task
    def export_axolotl(dataset: str) -> None:
        run_hindsight(
            ["export", dataset, "--to", "axolotl-kd", "--out", setting("hindsight_export", dataset + "-axolotl")]
        )

    export_axolotl(score())


hindsight_nightly()
