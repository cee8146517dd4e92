"""`curate server start`: a Prefect server for the team's deployment runs, on SQLite or PostgreSQL.

    curate server start                                   # SQLite under Prefect's home (one user, one machine)
    curate server start --db postgresql                   # a PostgreSQL cluster of its own under <home>/postgres
    curate server start --db postgresql://prefect@db.internal:5432/prefect   # the team's PostgreSQL

Runs in the foreground until interrupted; the database runs (and stops) with it when it is
the local cluster. Clients point at it through Prefect's own setting:
`prefect config set PREFECT_API_URL=http://HOST:PORT/api` (a profile) or the environment.
"""

from __future__ import annotations

import signal
from pathlib import Path

import typer
from prefect.settings import get_current_settings
from rich.markup import escape

from flows.cli_common import console, fail
from flows.server import LocalPostgres, PrefectServer, ServerError

server_app = typer.Typer(help="Run a Prefect server for the deployment (SQLite or PostgreSQL).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(server_app, name="server")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@server_app.command("start")
def start(
    db: str = typer.Option("sqlite", "--db", help="Database: 'sqlite' (under Prefect's home), 'postgresql' (a local "
                                                  "cluster under --pg-data, created once), or a postgresql:// URL."),
    host: str = typer.Option("127.0.0.1", help="Interface the Prefect server binds (loopback by default)."),
    port: int = typer.Option(4200, help="Port of the Prefect server."),
    pg_data: Path = typer.Option(None, "--pg-data", help="Folder of the local PostgreSQL cluster (default: <Prefect home>/postgres)."),
    pg_port: int = typer.Option(55432, "--pg-port", help="Port of the local PostgreSQL cluster (it binds 127.0.0.1 only)."),
) -> None:
    """Start a Prefect server (and its local PostgreSQL, with --db postgresql); stop both on Ctrl-C."""
    home = Path(get_current_settings().home)
    home.mkdir(parents=True, exist_ok=True)
    cluster = None
    try:
        if db == "postgresql":
            cluster = LocalPostgres(pg_data or home / "postgres", port=pg_port).start()
            url = cluster.url
            where = f"PostgreSQL cluster {cluster.folder} on 127.0.0.1:{pg_port}"
        elif db == "sqlite":
            url, where = None, f"SQLite under {home}"
        else:
            url, where = db, "PostgreSQL at " + db.split("@")[-1]  # the host and database, not a password
        server = PrefectServer(host, port, database_url=url, log=home / "server.log").start()
        server.wait_healthy()
    except ServerError as exc:
        if cluster is not None:
            cluster.stop()
        fail(str(exc), code=1)
    console.print(f"Prefect server on {escape(server.api_url)} (UI: http://{host}:{port}), database: {escape(where)}", highlight=False)
    console.print(f"point clients at it: prefect config set PREFECT_API_URL={escape(server.api_url)}", highlight=False)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop ends both servers, as Ctrl-C does
    try:
        code = server.proc.wait()
        if code:
            fail(f"the Prefect server exited ({code}); see {home / 'server.log'}", code=1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if cluster is not None:
            cluster.stop()
