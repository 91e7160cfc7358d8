"""A forking server of `airflow` commands for the tests: `python -m tests.night_server SOCKET`.

A night (`airflow dags test`) spends a third of its CPU before its first task: importing
Airflow, the providers and SDKs the tasks use, and building the in-process Execution API
(Cadwyn's versioned routes). The tests run about seventy nights and culprit steps, four
at a time on two cores: this server does that work once per pytest process, then forks
a child per command, which runs the very CLI (`airflow.__main__.main`) with the command's
own arguments, environment, folder and output, in a session of its own.

What the fork shares with the server is what any `airflow` process would have at that
point (the server reads no database, starts no thread and holds no socket but its own):
the configuration, read from the same AIRFLOW_HOME and AIRFLOW__ settings (a command with
other AIRFLOW__ settings does not come here: tests/services.py airflow_command), and
modules. The environment is the command's: connections, NIGHTLY_CI_CONFIG and DOCKER_HOST
are read when used.

Protocol, one connection per command: the client sends one JSON line (argv, env, cwd,
output: the file its stdout and stderr go to); the server answers the child's pid on one
line, then its exit status on another when it ends. The server is ready once its socket
accepts a connection.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socketserver
import sys
import threading
from typing import Any


def preload() -> None:
    """What every night imports and builds before its first task (see the module's doc)."""
    import airflow.__main__
    import airflow.cli.commands.dag_command
    import airflow.cli.commands.task_command  # noqa: F401
    from airflow.sdk.execution_time import supervisor, task_runner  # noqa: F401

    import include.nightly_ci.worker_preload  # noqa: F401 - what the tasks import
    from include.nightly_ci import dag  # noqa: F401

    app = supervisor.in_process_api_server().app  # the app only: its loop and thread start in the child
    init = getattr(app, "_cadwyn_initialize", None)  # Cadwyn builds its routes on the first request
    if init is not None and not getattr(app, "_cadwyn_initialized", True):
        init()
    if threading.active_count() != 1:  # a thread does not survive a fork: whatever it held would stay held
        raise RuntimeError(f"preloading started threads: {threading.enumerate()}")


def run_command(request: dict[str, Any]) -> int:
    """In the forked child: REQUEST's command, as `airflow ARGV...` would run it."""
    os.setsid()  # its own process group: a test's timeout or kill ends it and its children
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    out = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    sys.argv = ["airflow", *request["argv"]]
    from airflow.__main__ import main

    # What the interpreter does with how the command ended, as it would at its exit.
    try:
        main()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # the command's own (log handlers, the in-process API's loop)
    sys.stdout.flush()
    sys.stderr.flush()
    return code


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:  # in the child ForkingMixIn made for this connection
        request = json.loads(self.rfile.readline())
        self.wfile.write(f"{os.getpid()}\n".encode())
        self.wfile.flush()
        code = run_command(request)
        self.wfile.write(f"{code}\n".encode())
        self.wfile.flush()
        os._exit(code)  # nothing of the server's to tear down here: exit as the command did


class _Server(socketserver.ForkingMixIn, socketserver.UnixStreamServer):
    block_on_close = False  # the server's own end never waits for its children
    max_children = 64


def main() -> None:
    socket_path = sys.argv[1]
    preload()
    sys.stdout.flush()  # nothing of the server's own output may wait in a buffer its children copy
    sys.stderr.flush()
    with _Server(socket_path, _Handler) as server:  # listening: ready
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        server.serve_forever()


if __name__ == "__main__":
    main()
