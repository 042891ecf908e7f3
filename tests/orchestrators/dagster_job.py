"""Materializes deploy/dagster/hindsight_assets.py's asset in-process with the real Dagster and
writes, as JSON to the file named by its argument, what Dagster recorded: whether the run succeeded, the
materialization's metadata, the asset check evaluations and step failures.

Used by tests/it/orchestrators.rs; configure the asset with its HINDSIGHT_* variables.
"""

import importlib.util
import json
import pathlib
import sys

import dagster as dg

ROOT = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("hindsight_assets", ROOT / "deploy/dagster/hindsight_assets.py")
assets = importlib.util.module_from_spec(spec)
spec.loader.exec_module(assets)


def plain(value):
    v = value.value
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)


def main() -> int:
    result = dg.materialize([assets.sdft_dataset], raise_on_error=False)
    out = {"run_success": result.success, "materialization": None, "checks": [], "step_failures": []}
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        out["materialization"] = {
            "asset_key": mat.asset_key.to_user_string(),
            "metadata": {k: plain(v) for k, v in mat.metadata.items()},
            "metadata_types": {k: type(v).__name__ for k, v in mat.metadata.items()},
        }
    for ev in result.get_asset_check_evaluations():
        out["checks"].append({
            "check_name": ev.check_name,
            "passed": ev.passed,
            "severity": ev.severity.value,
            "metadata": {k: plain(v) for k, v in ev.metadata.items()},
        })
    for ev in result.all_events:
        if ev.is_step_failure:
            out["step_failures"].append(ev.event_specific_data.error.message.strip().splitlines()[0])
        msg = getattr(ev, "message", "") or ""
        if "[pipes]" in msg and ("did not receive" in msg or "exception" in msg):
            out.setdefault("pipes_warnings", []).append(msg.splitlines()[0])
    pathlib.Path(sys.argv[1]).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
