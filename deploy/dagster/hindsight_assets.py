"""A nightly hindsight dataset as a Dagster asset, launched through Dagster Pipes.

`hindsight run` sees Dagster's `DAGSTER_PIPES_*` environment and reports back:

- the materialization of this asset, with the dataset's rows, rows added, response tokens,
  bytes, bytes per token, drops per reason and the relevance threshold as metadata;
- the asset check `audit`: the write-audit-publish step (the contract checks on the new shards
  and the `[guards]` drift checks). A failed audit keeps the previous manifest, so readers never
  see the rows, and hindsight exits 4, which fails this step.

Configure with environment variables (or edit the constants): HINDSIGHT_BIN, HINDSIGHT_PIPELINE,
HINDSIGHT_OUTPUT, HINDSIGHT_ARGS (extra flags, shell-quoted). Load with
`dagster dev -f deploy/dagster/hindsight_assets.py`; tests/orchestrators/dagster_job.py runs it.
"""

import os
import shlex
import subprocess

import dagster as dg

ASSET = os.environ.get("HINDSIGHT_ASSET", "sdft_dataset")
# hindsight's exit status for a refused publish (README, "Exit codes").
AUDIT_FAILED = 4


@dg.asset(
    name=ASSET,
    description="Self-distillation dataset written by `hindsight run` (Parquet shards + manifest).",
    check_specs=[dg.AssetCheckSpec(name="audit", asset=ASSET, blocking=True)],
)
def sdft_dataset(context: dg.AssetExecutionContext):
    command = [
        os.environ.get("HINDSIGHT_BIN", "hindsight"),
        "run",
        os.environ.get("HINDSIGHT_PIPELINE", "pipelines/chat_logs.toml"),
        "--no-progress",
    ]
    if os.environ.get("HINDSIGHT_OUTPUT"):
        command += ["--output", os.environ["HINDSIGHT_OUTPUT"]]
    command += shlex.split(os.environ.get("HINDSIGHT_ARGS", ""))
    # PipesSubprocessClient would drop the reported check when the process fails; a session of
    # our own keeps the failed audit visible as a failed check before the step fails.
    with dg.open_pipes_session(
        context=context,
        context_injector=dg.PipesTempFileContextInjector(),
        message_reader=dg.PipesTempFileMessageReader(),
    ) as session:
        code = subprocess.run(command, env={**os.environ, **session.get_bootstrap_env_vars()}).returncode
    if code == 0:
        yield from session.get_results()
        return
    if code == AUDIT_FAILED:
        for result in session.get_results(implicit_materializations=False):
            if isinstance(result, dg.AssetCheckResult):
                yield result
        raise dg.Failure("hindsight refused to publish: the audit failed (see the `audit` check); "
                         "readers still see the previous manifest")
    raise dg.Failure(f"hindsight exited with status {code}")


defs = dg.Definitions(assets=[sdft_dataset])
