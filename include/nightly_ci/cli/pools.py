"""Create or update the Airflow pools a config names (run where the metadata DB is)."""

from __future__ import annotations

from collections.abc import Iterator

from include.nightly_ci.plan import Plan


def sync_pools(plan: Plan) -> Iterator[str]:
    from airflow.models.pool import Pool

    for name, (slots, description) in plan.pools.items():
        before = Pool.get_pool(name)
        Pool.create_or_update_pool(name, slots, description, include_deferred=False)
        if before is None:
            yield f"pool {name}: created with {slots} slots"
        elif before.slots != slots:
            yield f"pool {name}: slots {before.slots} -> {slots}"
        else:
            yield f"pool {name}: {slots} slots (unchanged)"
