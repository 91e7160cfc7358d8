"""Render the `nightly_ci_retention` DAG: daily expiry of artifacts, run tags, superseded
framework images and old images on the engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param

from include.nightly_ci.plan import Plan, engines_by_pool, load_plan
from include.nightly_ci.retention.expiry import TagRules, run_dag_ids
from include.nightly_ci.retention.operators import (
    ExpireArtifactsOperator,
    ExpireRunTagsOperator,
    PruneEnginesOperator,
)


def build_retention_dag(plan: Plan) -> DAG:
    dag_ids = run_dag_ids(plan)  # the nightly's runs and its culprit finder's
    with DAG(
        dag_id=plan.retention_dag_id,
        schedule=plan.retention_schedule,
        start_date=datetime.combine(plan.start_date, datetime.min.time(), tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=[*plan.tags, "retention"],
        # Listing and deleting end (L3): a stalled registry or store does not hold the next day's run.
        default_args={"owner": plan.owner, "retries": 1, "execution_timeout": timedelta(hours=2)},
        params={
            "dry_run": Param(False, type="boolean", title="Dry run", description="Log what would go; delete nothing.")
        },
        doc_md=f"""\
# Nightly CI retention

Daily, from facts the runs wrote themselves (never the store's or registry's dates):
- deletes the run folders of {" and ".join(f"`{d}`" for d in dag_ids)} under `{plan.artifacts_base}`
  whose run is older than {plan.artifacts_days} days (when the run really ran, whatever its night,
  from the folder's `nightly-ci-run.json`); nothing else under the base is touched;
- deletes run tags (`...-run-{{run_id}}`) and the culprit finder's candidate tags
  (`culprit-...-build-runtime`) pushed more than {plan.run_tags_days} days ago from every registry
  ({", ".join(plan.registries)}), and framework images no tag holds any more; moving tags never,
  nor an image a kept tag still points at;
- removes this project's images built more than {plan.run_tags_days} days ago from the builder
  and runner engines.

Trigger with `dry_run` to see what would go.
""",
    ) as dag:
        artifacts = plan.retention_tasks["artifacts"]
        # Last, and whatever the others did: the registry tasks age images by the push records
        # in the run folders this task deletes.
        expire_artifacts = ExpireArtifactsOperator(
            task_id=artifacts.task_id,
            task_display_name=artifacts.display_name,
            store=plan.store,
            dag_ids=dag_ids,
            keep_days=plan.artifacts_days,
            trigger_rule="all_done",
        )
        rules = TagRules.of(plan)
        for reg in plan.registries.values():
            spec = plan.retention_tasks[reg.name]
            (
                ExpireRunTagsOperator(
                    task_id=spec.task_id,
                    task_display_name=spec.display_name,
                    registry=reg,
                    rules=rules,
                    store=plan.store,
                    dag_ids=dag_ids,
                    keep_days=plan.run_tags_days,
                )
                >> expire_artifacts
            )
        engines = engines_by_pool(plan.cells)
        for pool, conn_ids in engines.items():
            spec = plan.retention_tasks[f"engines:{pool}"]
            PruneEnginesOperator(
                task_id=spec.task_id,
                task_display_name=spec.display_name,
                queue=spec.queue,
                conn_ids=conn_ids,
                keep_days=plan.run_tags_days,
            )
    return dag


def retention_dag_from_config(file: str | None = None) -> DAG:
    return build_retention_dag(load_plan(file))
