"""Command line: `python -m include.nightly_ci COMMAND`.

check [FILE]      validate a config; prints a one-line summary (exit 0) or every problem (exit 1)
pools [FILE]      create or update the Airflow pools the config names
inventory [FILE]  list what the registries hold for every cell, with digests
paused [FILE]     say, for each DAG of the config, whether it is paused and what the scheduler will run
schema [--check]  write the config's JSON schema and reference tables (--check: fail if stale)
history migrate   create or upgrade the history store's schema
history import    bring the runs in the artifact store that the history store lacks into it
"""

from __future__ import annotations

import argparse
import sys

from include.nightly_ci.config import load_config
from include.nightly_ci.errors import ConfigError, HistoryConfigError, HistoryUnavailable
from include.nightly_ci.plan import build_plan


def _check(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    plan = build_plan(cfg)
    print(
        f"OK {args.file or 'config'}: dag {plan.dag_id}, {len(plan.frameworks)} frameworks x "
        f"{len(plan.arches)} arches = {len(plan.cells)} cells, registries {', '.join(plan.registries)}, "
        f"pools {', '.join(plan.pools)}, schedule '{plan.schedule}'"
    )
    return 0


def _pools(args: argparse.Namespace) -> int:
    from include.nightly_ci.cli.pools import sync_pools

    for line in sync_pools(build_plan(load_config(args.file))):
        print(line)
    return 0


def _inventory(args: argparse.Namespace) -> int:
    from include.nightly_ci.cli.inventory import print_inventory

    return print_inventory(build_plan(load_config(args.file)))


def _paused(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from sqlalchemy.exc import SQLAlchemyError

    from include.nightly_ci.cli.paused import paused_lines

    plan = build_plan(load_config(args.file))
    try:
        lines = list(paused_lines(plan, datetime.now(UTC)))
    except SQLAlchemyError as exc:  # no database there, or one `airflow db migrate` has not made
        from airflow import settings

        where = settings.engine.url.render_as_string(hide_password=True) if settings.engine else "(none)"
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        print(f"cannot read the DAGs from the Airflow metadata database {where}: {cause}; "
              "run `airflow db migrate` first", file=sys.stderr)  # fmt: skip
        return 1
    for line in lines:
        print(line)
    return 0


def _schema(args: argparse.Namespace) -> int:
    from include.nightly_ci.config.reference import stale, write

    if args.check:
        for path in stale():
            print(f"{path} is stale: run `python -m include.nightly_ci schema`", file=sys.stderr)
        return 1 if stale() else 0
    for path in write():
        print(f"wrote {path}")
    return 0


def _history(args: argparse.Namespace) -> int:
    from include.nightly_ci.cli.history import import_runs, open_store

    plan = build_plan(load_config(args.file))
    store = open_store(plan, args.conn_id)
    try:
        if args.action == "import":
            import_runs(plan, store, every=args.all, out=print)
        else:
            where = store.engine.url.render_as_string(hide_password=True)
            print(f"history store {where} is at revision {store.migrate()}")
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.nightly_ci", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, helptext in (
        ("check", _check, "validate a config file"),
        ("pools", _pools, "create or update the Airflow pools of a config"),
        ("inventory", _inventory, "list the images the registries hold, with digests"),
        ("paused", _paused, "whether each DAG of the config is paused, and what the scheduler will run"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("file", nargs="?", help="config file (default: $NIGHTLY_CI_CONFIG or the shipped one)")
        p.set_defaults(func=func)
    p = sub.add_parser("schema", help="write the config's JSON schema and the reference tables generated from it")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is stale")
    p.set_defaults(func=_schema)
    p = sub.add_parser("history", help="the history store: migrate its schema, or import runs from the artifact store")
    p.add_argument("action", choices=["migrate", "import"])
    p.add_argument("file", nargs="?", help="config file (default: $NIGHTLY_CI_CONFIG or the shipped one)")
    p.add_argument("--conn-id", help="the history connection (default: the config's history.conn_id)")
    p.add_argument("--all", action="store_true", help="import: every run again, not only those the store lacks")
    p.set_defaults(func=_history)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, HistoryConfigError, HistoryUnavailable) as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
