"""What a worker imports once, before its tasks: the SDKs, provider hooks and modules the
nightly's tasks import when they run. Each task process is forked from the worker, so it
starts with them loaded instead of importing them again: 0.3 to 0.9 s less CPU per task
(Airflow's Celery provider preloads its own operators for the same reason), which adds up
over a night of 64 short tasks. Imported by

- a Celery worker at its start: `[celery] extra_celery_config` = `{"imports":
  ["include.nightly_ci.worker_preload"]}` (docker-compose.yaml, the system test's stack);
- the demo's LocalExecutor before it forks its workers (dev/demo.py); the tests' night
  server before it forks a night (tests/night_server.py).

Never by a DAG file: the dag-processor parses those every 30 s and imports only the SDK.
"""

from __future__ import annotations

import docker  # noqa: F401
from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # noqa: F401
from airflow.providers.docker.hooks.docker import DockerHook  # noqa: F401
from airflow.providers.microsoft.azure.hooks.container_registry import AzureContainerRegistryHook  # noqa: F401
from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook  # noqa: F401

from include.nightly_ci.build import builder, publish, source  # noqa: F401
from include.nightly_ci.history import store  # noqa: F401
from include.nightly_ci.images import engine, registries  # noqa: F401
from include.nightly_ci.report import markdown, reading, results, slack, triage  # noqa: F401
from include.nightly_ci.suites import run  # noqa: F401
