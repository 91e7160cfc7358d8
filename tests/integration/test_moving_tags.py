"""Moving tags on a real registry with auth (H1): racing runs, and commit ancestry on a
real git server."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
import requests

from dev.sample_repo import make_repo, nightly_history
from include.nightly_ci.build.ancestry import ancestry
from include.nightly_ci.images.moving import Held, Rules, TagIO, move_forward
from include.nightly_ci.images.registries import Manifest, retry_transient
from include.nightly_ci.names import LABEL_LOGICAL_DATE, LABEL_REVISION
from tests.services import GitServer, present

pytestmark = pytest.mark.integration
REPO = "nightly-ci/moving"
TAG = "nightly-vllm-amd64"
NIGHT = datetime(2026, 11, 29, 8, tzinfo=UTC)
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
T = TypeVar("T")


def put_image(reg, tag: str, night: datetime, revision: str) -> str:
    """A small image (a config and no layers) labelled as a night's, pushed under TAG."""
    labels = {LABEL_LOGICAL_DATE: night.isoformat(), LABEL_REVISION: revision}
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()  # fmt: skip
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    auth, base = (reg.user, reg.password), f"http://{reg.host}/v2/{REPO}"
    start = requests.post(f"{base}/blobs/uploads/", auth=auth, timeout=10)
    location = start.headers["Location"]
    location = location if location.startswith("http") else f"http://{reg.host}{location}"
    sep = "&" if "?" in location else "?"
    requests.put(f"{location}{sep}digest={digest}", data=config, auth=auth, timeout=10).raise_for_status()
    body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "layers": [],
                       "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                  "size": len(config), "digest": digest}}).encode()  # fmt: skip
    return reg.client().put_manifest(REPO, tag, Manifest(body, MANIFEST, "sha256:" + hashlib.sha256(body).hexdigest()))


def retrying(what: str, func: Callable[[], T]) -> T:
    """FUNC retried on a registry's 5xx as a push task retries it (build/publish.py): the
    registry's filesystem store answers 500 now and then to a read of a tag being written."""
    return retry_transient(what, func, attempts=4, backoff=0.2, backoff_max=1.0)


def tag_io(
    reg, mine_tag: str, *, pause_before_write: threading.Event | None = None, wrote: threading.Event | None = None
) -> TagIO:
    client = reg.client()
    manifest = client.manifest(REPO, mine_tag)

    def read() -> Held | None:
        image = retrying(f"inspect {TAG}", lambda: client.image(REPO, TAG))
        return Held.of_labels(image.digest, image.labels) if image else None

    def write() -> str:
        if pause_before_write is not None:
            assert pause_before_write.wait(10)
        stored = retrying(f"tag {TAG}", lambda: client.put_manifest(REPO, TAG, manifest))
        if wrote is not None:
            wrote.set()
        return stored

    return TagIO(TAG, read, write)


def held_night(reg) -> str:
    return present(reg.client().image(REPO, TAG)).labels[LABEL_LOGICAL_DATE]


@pytest.fixture
def reg(registries):
    return registries("moving")


def race(reg, settle: float) -> dict[str, Any]:
    """An older night (A) re-checks the tag, then a newer night (B) checks and writes, then
    A's write lands over B's: the worst order two racing runs can take."""
    put_image(reg, TAG, NIGHT - timedelta(days=5), "x")
    older = put_image(reg, "run-a", NIGHT - timedelta(days=1), "a")
    newer = put_image(reg, "run-b", NIGHT, "b")
    b_wrote = threading.Event()
    io_a = tag_io(reg, "run-a", pause_before_write=b_wrote)
    io_b = tag_io(reg, "run-b", wrote=b_wrote)
    now = NIGHT + timedelta(hours=2)
    rules_a = Rules(Held(older, NIGHT - timedelta(days=1), "a"), now, lambda a, b: False, settle, settle * 2 / 3)
    rules_b = Rules(Held(newer, NIGHT, "b"), now, lambda a, b: False, settle, settle * 2 / 3)
    outcomes: dict[str, Any] = {}
    a = threading.Thread(target=lambda: outcomes.__setitem__("a", move_forward(io_a, rules_a)))
    a.start()
    outcomes["b"] = move_forward(io_b, rules_b)
    a.join(30)
    outcomes["held"] = held_night(reg)
    return outcomes


def test_two_runs_racing_for_a_moving_tag_leave_it_on_the_newer_night(reg):
    outcomes = race(reg, settle=1.0)
    assert outcomes["held"] == NIGHT.isoformat()
    b, a = outcomes["b"], outcomes["a"]
    assert b.moved and b.rounds == 2, b  # its read-back found the older write and put its own back
    # A either saw B on its own read-back, or read back its own write just before B put
    # its image back: like any night's, its move lasts until a newer night's.
    assert a.moved or "newer" in a.reason, a


def test_the_race_many_times_always_ends_on_the_newer_night(registries):
    """Without forcing the order: two writers, many times, on one tag."""
    reg = registries("many")
    ends = []
    for i in range(5):
        put_image(reg, TAG, NIGHT - timedelta(days=9), "x")
        digests = [put_image(reg, f"run-{n}", NIGHT - timedelta(days=n), f"c{n}") for n in (1, 0)]
        now = NIGHT + timedelta(hours=1)
        threads: list[threading.Thread] = []
        for n, digest in zip((1, 0), digests, strict=True):
            rules = Rules(Held(digest, NIGHT - timedelta(days=n), f"c{n}"), now, lambda a, b: False, 0.3, 0.2)
            io = tag_io(reg, f"run-{n}")
            threads.append(threading.Thread(target=move_forward, args=(io, rules)))
        for t in threads[:: 1 if i % 2 else -1]:
            t.start()
        for t in threads:
            t.join(30)
        ends.append(held_night(reg))
    assert ends == [NIGHT.isoformat()] * 5


def test_commit_ancestry_on_a_real_git_server(tmp_path):
    commits = make_repo(tmp_path / "repos" / "src.git", nightly_history(3, datetime.now(UTC)))
    server = GitServer(tmp_path / "repos")
    server.start()
    try:
        is_ancestor = ancestry(server.url("src.git"), timeout_seconds=60)
        assert is_ancestor(commits[0], commits[-1]) is True
        assert is_ancestor(commits[-1], commits[0]) is False
        assert is_ancestor("0" * 40, commits[0]) is None  # this run's commit not in the repository: cannot tell
        # The tag's commit is not in the repository (history rewritten, or pushed from a
        # fork): nothing here is behind it, or the tag would stay on it for good.
        assert is_ancestor(commits[0], "f" * 40) is False
    finally:
        server.stop()
