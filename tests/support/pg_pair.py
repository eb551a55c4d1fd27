"""A PostgreSQL primary and a streaming standby (`pg_basebackup -R`) for tests and benchmarks.

Private ports (56400-56499), socket dir and data under a temp dir, 127.0.0.1 only, run
as the `postgres` user when we are root (PostgreSQL refuses root).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa


def pg_bin() -> str | None:
    """The directory of initdb, pg_ctl and pg_basebackup, or None if not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_basebackup"))
    path = os.path.dirname(found[-1]) if found else os.path.dirname(shutil.which("pg_basebackup") or "")
    return path if path and os.path.exists(os.path.join(path, "initdb")) else None


def free_port(lo: int = 56400, hi: int = 56500) -> int:
    for port in range(lo, hi):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 56400-56499")


class PgPair:
    """A primary and a streaming standby, run as `postgres` when we are root."""

    def __init__(self) -> None:
        found = pg_bin()
        if found is None:
            raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl, pg_basebackup) not installed")
        self.bin = found
        self.dir = Path(tempfile.mkdtemp(prefix="sgcache-replicas-"))
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.primary_port = free_port()
        self.standby_port = free_port(self.primary_port + 1)

    def _run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        res = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        if res.returncode:
            logs = "".join(f"\n{p.name}: {p.read_text()[-1500:]}" for p in self.dir.glob("*.log"))
            raise RuntimeError(f"{cmd[0]} failed: {res.stderr[-1500:]}{logs}")
        return res

    def _ctl(self, node: str, action: str, port: int | None = None) -> None:
        args = [f"{self.bin}/pg_ctl", "-D", str(self.dir / node), "-l", str(self.dir / f"{node}.log"), "-w"]
        if port is not None:
            args += ["-o", f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
                           " -c wal_level=replica -c max_wal_senders=5 -c max_connections=100"]
        if action == "stop":
            args += ["-m", "immediate"]
        self._run(*args, action)

    def start(self) -> None:
        self._run(f"{self.bin}/initdb", "-D", str(self.dir / "primary"), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8")
        with open(self.dir / "primary" / "pg_hba.conf", "a") as f:  # the standby's WAL stream
            f.write("host replication postgres 127.0.0.1/32 trust\n")
        self.primary_port = self._start_on_a_free_port("primary", self.primary_port)
        admin = sa.create_engine(self.url(self.primary_port, "postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text("CREATE DATABASE sgcache"))
        admin.dispose()
        self._run(f"{self.bin}/pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
                  "-D", str(self.dir / "standby"), "-R", "-X", "stream", "--checkpoint=fast")
        self.standby_port = self._start_on_a_free_port("standby", self.standby_port)

    def _start_on_a_free_port(self, node: str, port: int) -> int:
        """Start a node; if another process took the port meanwhile (the range overlaps the
        kernel's ephemeral ports), try the next free one."""
        for _ in range(5):
            try:
                self._ctl(node, "start", port)
                return port
            except RuntimeError as e:
                if "already in use" not in str(e):
                    raise
                port = free_port(port + 1)
        raise RuntimeError(f"no free port for the {node}")

    def start_standby(self) -> None:
        self._ctl("standby", "start", self.standby_port)

    def _standby_pids(self) -> list[int]:
        """The standby's postmaster and its children (the processes this pair started)."""
        top = int((self.dir / "standby" / "postmaster.pid").read_text().split()[0])
        pids = [top]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == top:
                pids.append(int(stat.parent.name))
        return pids

    def freeze_standby(self) -> None:
        """SIGSTOP the standby: it keeps its connections but answers nothing (a hung server)."""
        for pid in self._standby_pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw_standby(self) -> None:
        for pid in self._standby_pids():
            os.kill(pid, signal.SIGCONT)

    def stop_standby(self) -> None:
        self._ctl("standby", "stop")

    def url(self, port: int, db: str = "sgcache") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{db}"

    @property
    def primary_url(self) -> str:
        return self.url(self.primary_port)

    @property
    def standby_url(self) -> str:
        return self.url(self.standby_port)

    def on_standby(self, sql: str) -> Any:
        e = sa.create_engine(self.standby_url, isolation_level="AUTOCOMMIT")
        try:
            with e.connect() as c:
                return c.execute(sa.text(sql)).scalar()
        finally:
            e.dispose()

    def stop(self) -> None:
        for node in ("standby", "primary"):
            if (self.dir / node).exists():
                try:
                    self._ctl(node, "stop")
                except RuntimeError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)
