"""A Prefect server for a team: its database on SQLite under Prefect's home, or on PostgreSQL.

    cluster = LocalPostgres(Path(".prefect/postgres"), port=55432)   # a cluster of its own, on loopback
    cluster.start()                                                  # initdb the first time, then pg_ctl start
    server = PrefectServer("127.0.0.1", 4200, database_url=cluster.url, log=Path(".prefect/server.log"))
    server.start(); server.wait_healthy()
    ...
    server.stop(); cluster.stop()

Prefect reads the database from its own setting, `PREFECT_SERVER_DATABASE_CONNECTION_URL`
(`server.database.connection_url`; asyncpg for PostgreSQL), given to the server's process
only: the user's profile and environment are left as they are. A `postgresql://` URL
names an existing server (the team's); `LocalPostgres` runs Debian's PostgreSQL as a
cluster under a folder of its own, bound to 127.0.0.1 on its own port, for one machine or
the test suite. PostgreSQL refuses to run as root: as root, its programs run as the
`postgres` user, which owns the folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PG_ROOTS = (Path("/usr/lib/postgresql"), Path("/usr/local/pgsql"))


class ServerError(RuntimeError):
    """A database or Prefect server that cannot be found, started or reached; the message says what to do."""


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl): Debian's newest, or the ones on PATH."""
    for root in PG_ROOTS:
        found = sorted(root.glob("*/bin/initdb"), key=lambda p: p.parent.parent.name) if root.is_dir() else []
        found = found or ([root / "bin" / "initdb"] if (root / "bin" / "initdb").is_file() else [])
        if found:
            return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise ServerError("PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
                      "on Debian or Ubuntu, `sudo apt-get install -y postgresql`")


def asyncpg_url(url: str) -> str:
    """A PostgreSQL URL as Prefect's server takes it (the asyncpg driver)."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    raise ServerError(f"not a PostgreSQL URL: {url!r} (postgresql://user[:password]@host:port/database)")


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


class LocalPostgres:
    """A PostgreSQL cluster under `folder`, on `host`:`port` only (its socket in the folder too)."""

    def __init__(self, folder: Path, port: int = 55432, host: str = "127.0.0.1", user: str = "prefect",
                 database: str = "prefect"):
        self.folder, self.port, self.host, self.user, self.database = Path(folder).resolve(), port, host, user, database
        self.bin = postgres_bin()

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{self.database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(args[0]) if "/" in str(args[0]) else str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise ServerError(f"{' '.join(cmd)} failed ({out.returncode}): {(out.stderr or out.stdout).strip()[-2000:]}")
        return out

    def running(self) -> bool:
        return self.data.is_dir() and self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def start(self) -> "LocalPostgres":
        """Create the cluster the first time (trust on loopback only, the socket in its folder), then start it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            if self._run("/usr/bin/test", "-w", str(self.folder), check=False).returncode != 0:
                raise ServerError(f"{self.folder}: the postgres user cannot reach this folder (a parent folder is "
                                  "private to root): put the cluster under a folder it can reach (--pg-data)")
        fresh = not (self.data / "PG_VERSION").is_file()
        if fresh:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8")
        if not self.running():
            if not port_free(self.host, self.port):
                raise ServerError(f"port {self.port} on {self.host} is taken: choose another (--pg-port)")
            options = f"-p {self.port} -k {self.folder} -c listen_addresses={self.host}"
            self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "postgres.log"), "-w", "start")
        if fresh:
            self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", self.user, self.database)
        return self

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


def api_healthy(api_url: str) -> bool:
    """Whether a Prefect API answers its health check at `api_url` (…/api)."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


class PrefectServer:
    """`prefect server start` in a child process, its database given to that process alone."""

    def __init__(self, host: str, port: int, *, database_url: str | None = None, log: Path | None = None):
        self.host, self.port, self.log = host, port, log
        self.database_url = asyncpg_url(database_url) if database_url and not database_url.startswith("sqlite") else database_url
        self.proc: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.database_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.database_url
        return env

    def start(self) -> "PrefectServer":
        if not port_free(self.host, self.port):
            raise ServerError(f"port {self.port} on {self.host} is taken (a Prefect server already? {self.api_url})")
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        prefect = Path(sys.executable).with_name("prefect")
        self.proc = subprocess.Popen([str(prefect), "server", "start", "--host", self.host, "--port", str(self.port)],
                                     env=self.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while not api_healthy(self.api_url):
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"the Prefect server exited ({self.proc.returncode})" + (f"; see {self.log}" if self.log else ""))
            if time.time() > deadline:
                raise ServerError(f"the Prefect server did not answer at {self.api_url} in {timeout:.0f} s"
                                  + (f"; see {self.log}" if self.log else ""))
            time.sleep(0.5)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the server's process group (uvicorn and its workers), SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
