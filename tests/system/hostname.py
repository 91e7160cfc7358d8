"""`[core] hostname_callable` of the system test: each Celery worker reports its own name,
so that the test can see which worker (queue) ran which task on one machine."""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    return os.environ.get("NIGHTLY_CI_WORKER_NAME") or socket.getfqdn()
