"""A throwaway PostgreSQL + PostGIS cluster for tests and benchmarks (a pytest plugin).

`start_cluster()` runs `initdb` and `pg_ctl` from the Debian packages `postgresql` and `postgis`
in a private temporary directory, listening on a unix socket only, so it never touches a real
server. `initdb` refuses to run as root, so as root the cluster runs as the `postgres` user.

Fixtures: `postgis_cluster` (one per test session, with a template database that already has
the PostGIS extension) and `postgis_database` (the URL of a fresh database per test, copied
from that template and dropped afterwards). Without the binaries the tests are skipped, except
when the `CI` environment variable is set: there a missing server is a failure, never a skip.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

SERVER_USER = "postgres"  # the OS user that runs the cluster when we are root
DB_USER = "twin"
TEMPLATE = "twin_template"
INSTALL_HINT = "install the Debian packages 'postgresql' and 'postgis' (apt-get install postgresql postgis)"
SHM_NEEDED = 2 << 30  # bytes free in /dev/shm before the test cluster lives there
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class ClusterUnavailable(RuntimeError):
    """PostgreSQL or PostGIS is not installed (or cannot run) on this machine."""


def find_bin_dir() -> Path | None:
    """The directory with `initdb` and `pg_ctl`: $TWIN_PG_BIN if set, else the newest Debian install."""
    wanted = ("initdb", "pg_ctl", "postgres")
    override = os.environ.get("TWIN_PG_BIN")
    if override:
        candidates = [Path(override)]
    else:
        installed = Path("/usr/lib/postgresql").glob("*/bin")
        candidates = sorted(installed, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).parent)
    return next((c for c in candidates if all((c / name).is_file() for name in wanted)), None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A running (or stopped) private cluster: `url(db)` to connect, `stop()`/`start()` for faults."""

    def __init__(self, root: Path, bin_dir: Path, port: int) -> None:
        self.root = root
        self.bin_dir = bin_dir
        self.port = port
        self.data_dir = root / "data"
        self.socket_dir = root / "sock"
        self.log_file = root / "server.log"
        self.running = False

    # ----- connecting -------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL through the private socket directory."""
        return f"postgresql://{DB_USER}@/{dbname}?host={quote(str(self.socket_dir), safe='')}&port={self.port}"

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as con:
            con.execute(sql)

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database (from `template` if given); returns its URL."""
        from psycopg import sql

        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self.execute(statement.as_string())
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database even if a test left connections open to it."""
        from psycopg import sql

        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)).as_string())

    # ----- lifecycle --------------------------------------------------------------------
    def _run(self, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=self.root)

    def _check(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""
            raise ClusterUnavailable(f"{what} failed ({result.returncode}): {result.stderr.strip()}\n{log}")

    def start(self) -> None:
        """Start the server (again) on the same socket and port, waiting until it accepts."""
        result = self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "start")
        self._check(result, "pg_ctl start")
        self.running = True

    def stop(self) -> None:
        """Stop the server, cutting off open connections (as a crash or restart would)."""
        if not self.running:
            return
        result = self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")
        self._check(result, "pg_ctl stop")
        self.running = False

    def destroy(self) -> None:
        """Stop the server and delete every file of the cluster."""
        try:
            self.stop()
        finally:
            atexit.unregister(self.destroy)
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def _give_to_server_user(path: Path) -> None:
    """As root the server runs as `postgres`, which must own its directories."""
    if os.geteuid() != 0:
        return
    import pwd

    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError as exc:
        raise ClusterUnavailable(f"running as root but there is no '{SERVER_USER}' user: {INSTALL_HINT}") from exc
    if shutil.which("runuser") is None:
        raise ClusterUnavailable("running as root needs 'runuser' (util-linux) to start PostgreSQL as postgres")
    for item in [path, *path.rglob("*")]:
        os.chown(item, entry.pw_uid, entry.pw_gid)


def start_cluster(parent: Path | None = None, *, durable: bool = False) -> Cluster:
    """initdb + pg_ctl start in a new directory under `parent` (default: the system temp dir).

    `durable=False` turns fsync off, which is right for tests; benchmarks that measure writes
    should pass `durable=True`. The parent must be reachable by the `postgres` user when run as
    root (the system temp dir is; pytest's tmp_path is not). Raises ClusterUnavailable when the
    binaries are missing. Call `destroy()` when done (also done at interpreter exit).
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise ClusterUnavailable(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}")
    root = Path(tempfile.mkdtemp(prefix="twin-pg-", dir=parent))
    cluster = Cluster(root, bin_dir, _free_port())
    atexit.register(cluster.destroy)
    try:
        cluster.socket_dir.mkdir()
        _give_to_server_user(root)
        init = cluster._run(
            "initdb", "-D", str(cluster.data_dir), "-A", "trust", "-U", DB_USER, "-E", "UTF8", "--locale=C", "--no-sync"
        )
        cluster._check(init, "initdb")
        settings = {
            "port": str(cluster.port),
            "unix_socket_directories": f"'{cluster.socket_dir}'",
            "listen_addresses": "''",
            "max_connections": "200",
            **({} if durable else FAST_SETTINGS),
        }
        with open(cluster.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# cim-twin test cluster\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster


def create_postgis_template(cluster: Cluster, name: str = TEMPLATE) -> str:
    """A template database with the PostGIS extension, so new databases are a fast copy."""
    cluster.create_database(name)
    try:
        cluster.execute("CREATE EXTENSION postgis", dbname=name)
    except Exception as exc:  # psycopg errors: the extension files are not installed
        raise ClusterUnavailable(f"CREATE EXTENSION postgis failed ({exc}): {INSTALL_HINT}") from exc
    from psycopg import sql

    statement = sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(sql.Identifier(name))
    cluster.execute(statement.as_string())
    return name


def _scratch_parent() -> Path | None:
    """Tests put the cluster in memory when there is room: creating databases is then ~5x faster."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= SHM_NEEDED:
            return shm
    except OSError:
        pass
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostGIS tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"PostGIS tests skipped: {reason}")


@pytest.fixture(scope="session")
def postgis_cluster() -> Iterator[Cluster]:
    """One private PostgreSQL cluster for the session, with a PostGIS template database."""
    try:
        cluster = start_cluster(_scratch_parent())
    except ClusterUnavailable as exc:
        _unavailable(str(exc))
    try:
        create_postgis_template(cluster)
    except ClusterUnavailable as exc:
        cluster.destroy()
        _unavailable(str(exc))
    yield cluster
    cluster.destroy()


_database_numbers = itertools.count(1)


@pytest.fixture
def postgis_database(postgis_cluster: Cluster) -> Iterator[str]:
    """The URL of an empty PostGIS database for one test."""
    if not postgis_cluster.running:  # a fault test stopped the server and did not restart it
        postgis_cluster.start()
    name = f"twin_test_{os.getpid()}_{next(_database_numbers)}"
    url = postgis_cluster.create_database(name, template=TEMPLATE)
    yield url
    if postgis_cluster.running:
        postgis_cluster.drop_database(name)
