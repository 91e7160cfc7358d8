"""Building a target of the project's Dockerfile on a builder engine.

The build context travels to the engine over its API, so the builder needs no file
system shared with the worker. Output is streamed line by line to a callback (the task
log) as the engine produces it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.nightly_ci.errors import BuildError
from include.nightly_ci.images.engine import LineSink

if TYPE_CHECKING:
    from docker import APIClient

_STEP = re.compile(r"^Step (\d+)/(\d+) : (\w+)")


@dataclass
class BuildResult:
    image_id: str
    steps_total: int = 0
    steps_cached: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def cache_hit_rate(self) -> float:
        return round(self.steps_cached / self.steps_total, 4) if self.steps_total else 0.0


def parse_build_stream(chunks: Iterable[dict[str, Any]], sink: LineSink) -> BuildResult:
    """Follow a classic-builder stream: log every line, count steps and cache hits.

    FROM, and ARGs before the first FROM, are not counted: they select a base image and
    are never "cached".
    """
    result = BuildResult(image_id="")
    pending = ""
    counting = seen_from = False
    for chunk in chunks:
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            tail = "\n".join(result.log[-30:])
            raise BuildError(f"build failed: {detail}\n--- last output ---\n{tail}")
        if "aux" in chunk and "ID" in chunk["aux"]:
            result.image_id = chunk["aux"]["ID"]
        pending += chunk.get("stream", "")
        while "\n" in pending:
            line, pending = pending.split("\n", 1)
            result.log.append(line)
            sink(line)
            step = _STEP.match(line)
            if step:
                is_from = step.group(3).upper() == "FROM"
                seen_from = seen_from or is_from
                counting = seen_from and not is_from
                result.steps_total += counting
            elif counting and line.strip() == "---> Using cache":
                result.steps_cached += 1
    if pending:
        result.log.append(pending)
        sink(pending)
    if not result.image_id:
        raise BuildError("the engine reported no image id; last output:\n" + "\n".join(result.log[-30:]))
    return result


def build(
    client: APIClient,
    *,
    context_dir: str,
    dockerfile: str,
    target: str,
    tag: str,
    platform: str,
    build_args: dict[str, str],
    labels: dict[str, str],
    cache_from: list[str],
    network_mode: str | None,
    sink: LineSink,
) -> BuildResult:
    """Build TARGET of the project's Dockerfile, then stamp LABELS on the result.

    The labels change every run; added by the Dockerfile build they would be steps that
    never hit the cache and would break the cache chain for what follows. Stamped in a
    one-line metadata-only build on top, the project's own steps stay fully cacheable.
    """
    stream = client.build(
        path=context_dir,
        dockerfile=dockerfile,
        target=target,
        platform=platform,
        buildargs=build_args,
        cache_from=cache_from or None,
        network_mode=network_mode,
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    )
    result = parse_build_stream(stream, sink)
    result.image_id = stamp_labels(client, result.image_id, labels, tag, platform, sink)
    return result


def stamp_labels(
    client: APIClient, image_id: str, labels: dict[str, str], tag: str, platform: str, sink: LineSink
) -> str:
    """IMAGE_ID with LABELS added (no new layer), tagged TAG; the new image id."""
    import io

    stream = client.build(
        fileobj=io.BytesIO(f"FROM {image_id}\n".encode()),
        labels=labels,
        tag=tag,
        platform=platform,
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    )
    return parse_build_stream(stream, sink).image_id
