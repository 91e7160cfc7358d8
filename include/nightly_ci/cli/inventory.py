"""What the registries hold for every cell: tag, digest, architecture, commit and night.

Read through the registry API with the same connections the DAG uses; nothing is pulled.
"""

from __future__ import annotations

from dataclasses import dataclass

from include.nightly_ci.images.registries import RegistryClient, registry_auth
from include.nightly_ci.names import FRAMEWORK, LABEL_LOGICAL_DATE, LABEL_REVISION, LABEL_RUN_ID, RUNTIME
from include.nightly_ci.plan import Plan


@dataclass(frozen=True)
class Entry:
    registry: str
    cell: str
    image: str
    ref: str
    digest: str
    architecture: str
    commit: str
    night: str


def collect(plan: Plan, run_id: str | None = None) -> tuple[list[Entry], list[str]]:
    """Every expected image of PLAN (for RUN_ID's run tags, or the run that made each
    moving tag) and the list of those missing."""
    entries, missing = [], []
    for reg in plan.registries.values():
        auth = registry_auth(reg)
        api = RegistryClient(auth)
        for cell in plan.cells:
            pushes = [p.image for p in cell.framework_pushes + cell.runtime_pushes if p.registry == reg.name]
            wanted = []
            if FRAMEWORK in pushes:
                wanted.append((FRAMEWORK, cell.framework_tag))
            if RUNTIME in pushes:
                wanted.append((RUNTIME, cell.nightly_tag))
            for image, tag in list(wanted):
                found = api.image(reg.repository, tag)
                if found is None:
                    missing.append(f"{auth.host}/{reg.repository}:{tag}")
                    continue
                entries.append(_entry(reg.name, cell.group_id, image, f"{auth.host}/{reg.repository}:{tag}", found))
                if image == RUNTIME:
                    run_tag = cell.run_tag(run_id or found.labels.get(LABEL_RUN_ID, ""))
                    by_run = api.image(reg.repository, run_tag)
                    if by_run is None:
                        missing.append(f"{auth.host}/{reg.repository}:{run_tag}")
                    else:
                        entries.append(
                            _entry(reg.name, cell.group_id, image, f"{auth.host}/{reg.repository}:{run_tag}", by_run)
                        )
    return entries, missing


def _entry(registry: str, cell: str, image: str, ref: str, found) -> Entry:
    return Entry(
        registry,
        cell,
        image,
        ref,
        found.digest,
        found.architecture,
        found.labels.get(LABEL_REVISION, "?"),
        found.labels.get(LABEL_LOGICAL_DATE, "?"),
    )


def print_inventory(plan: Plan, run_id: str | None = None) -> int:
    entries, missing = collect(plan, run_id)
    print(f"{'registry':8} {'image':9} {'arch':6} {'commit':12} {'digest':19} reference")
    for e in entries:
        print(f"{e.registry:8} {e.image:9} {e.architecture:6} {e.commit[:12]:12} {e.digest[:19]:19} {e.ref}")
    for ref in missing:
        print(f"MISSING  {ref}")
    print(f"{len(entries)} images in {len(plan.registries)} registries, {len(missing)} missing")
    return 1 if missing else 0
