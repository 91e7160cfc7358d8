"""Render the `nightly_ci_retention` DAG: daily expiry of artifacts and run tags."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Param

from include.nightly_ci.plan import Plan, load_plan
from include.nightly_ci.retention.expiry import TagRules
from include.nightly_ci.retention.operators import ExpireArtifactsOperator, ExpireRunTagsOperator


def build_retention_dag(plan: Plan) -> DAG:
    with DAG(
        dag_id=plan.retention_dag_id,
        schedule=plan.retention_schedule,
        start_date=datetime.combine(plan.start_date, datetime.min.time(), tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=[*plan.tags, "retention"],
        default_args={"owner": plan.owner, "retries": 1},
        params={
            "dry_run": Param(False, type="boolean", title="Dry run", description="Log what would go; delete nothing.")
        },
        doc_md=f"""\
# Nightly CI retention

Daily: deletes artifacts older than {plan.artifacts_days} days from `{plan.artifacts_base}`,
and run-specific image tags (`...-run-{{run_id}}`) older than {plan.run_tags_days} days from
every registry ({", ".join(plan.registries)}). Moving tags and framework cache tags are never
deleted, nor an image a kept tag still points at. Trigger with `dry_run` to see what would go.
""",
    ) as dag:
        artifacts = plan.retention_tasks["artifacts"]
        ExpireArtifactsOperator(
            task_id=artifacts.task_id,
            task_display_name=artifacts.display_name,
            store=plan.store,
            keep_days=plan.artifacts_days,
        )
        rules = TagRules.of(plan)
        for reg in plan.registries.values():
            spec = plan.retention_tasks[reg.name]
            ExpireRunTagsOperator(
                task_id=spec.task_id,
                task_display_name=spec.display_name,
                registry=reg,
                rules=rules,
                keep_days=plan.run_tags_days,
            )
    return dag


def retention_dag_from_config(file: str | None = None) -> DAG:
    return build_retention_dag(load_plan(file))
