"""Render the `nightly_ci_retention` DAG: daily expiry of artifacts and run tags."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Param, task

from include.nightly_ci.plan import Plan, load_plan


def build_retention_dag(plan: Plan) -> DAG:
    with DAG(
        dag_id=f"{plan.dag_id}_retention",
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

        @task(task_display_name="Expire artifacts")
        def expire_artifacts(params=None) -> list[str]:
            from include.nightly_ci.retention import expire_artifacts

            return expire_artifacts(plan, datetime.now(UTC), params["dry_run"])

        expire_artifacts()
        for reg in plan.registries.values():

            @task(task_id=f"expire_run_tags_{reg.name}", task_display_name=f"Expire run tags in {reg.name}")
            def expire_tags(params=None, reg=reg) -> list[str]:
                from include.nightly_ci.retention import expire_registry

                decisions = expire_registry(plan, reg, datetime.now(UTC), params["dry_run"])
                return [d.tag for d in decisions if d.delete]

            expire_tags()
    return dag


def retention_dag_from_config(file: str | None = None) -> DAG:
    return build_retention_dag(load_plan(file))
