"""`sgcache ctrl`: JSON lines over a unix socket in the data dir, served by the sync leader.

One request line (`{"cmd": "status"|"poll"|"scan"}`), one answer line. `poll` makes the
watcher poll now and answers once it has caught up, so tests never sleep; `scan` runs
an interval scan first. Only the leader binds the socket, so it always reaches the
process that is actually applying changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from ..config import Config

log = logging.getLogger("sgcache.control")

SOCKET_NAME = "sgcache.sock"
COMMANDS = ("status", "poll", "scan")


def socket_path(config: Config) -> Path:
    return Path(config.data_dir).resolve() / SOCKET_NAME


class ControlServer:
    def __init__(self, config: Config, loop: Any) -> None:
        self.path = socket_path(config)
        self.loop = loop  # the SyncLoop: request_poll(), request_scan(), status()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if self._server is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if len(str(self.path)) > 100:
            log.warning("control socket path too long for a unix socket: %s", self.path)
            return
        self.path.unlink(missing_ok=True)  # a stale socket from a dead leader
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            self.path.unlink(missing_ok=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                req = json.loads(line or b"{}")
                cmd = req.get("cmd")
                if cmd == "status":
                    out: dict[str, Any] = {"ok": True, **self.loop.status()}
                elif cmd == "poll":
                    out = {"ok": True, **await self.loop.request_poll()}
                elif cmd == "scan":
                    out = {"ok": True, **await self.loop.request_scan()}
                else:
                    out = {"ok": False, "error": f"unknown command {cmd!r}; use one of {', '.join(COMMANDS)}"}
            except Exception as e:
                out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            writer.write(json.dumps(out, default=str).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()


def send(config: Config, cmd: str, timeout: float = 120.0) -> dict[str, Any]:
    """Send one command to the running leader and return its answer."""
    path = socket_path(config)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError as e:
            raise ConnectionError(f"no sync leader is listening on {path} ({e.strerror})") from e
        s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)
