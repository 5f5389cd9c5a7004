"""Claims on outputs, so concurrent ``pila predict`` runs into one folder split the work.

Before generating a video, the writer claims it: it creates ``<sidecar>.claim`` with
``O_CREAT | O_EXCL`` (atomic on local file systems and NFSv3+) and writes its pid, host,
time and a random token into it. A run that finds a claim it does not hold skips that
output; the holder removes the claim once the sidecar is written (or on an error), so a
video and its sidecar always come from one run.

A claim is *stale* when its holder is gone: its pid is not running on this host, or it is
older than ``timeout_s`` (the only test for another host, whose processes cannot be seen;
on this host it covers a pid reused by an unrelated process), or it is
unreadable and older than :data:`EMPTY_CLAIM_GRACE_S` (a run killed between creating and
filling it). A stale claim is taken over under an ``flock`` on its folder, after checking
it again, so two runs never take over the same claim.

:func:`remove_stale_temporaries` deletes what a killed run leaves behind:
:func:`pila.io.atomic_path`'s temporary siblings ``.{name}.{8 hex}{suffix}`` of the files
the layout writes, when no live claim holds the output.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pila.io import read_json

log = logging.getLogger(__name__)

CLAIM_SUFFIX = ".claim"
EMPTY_CLAIM_GRACE_S = 60.0
"""Ours: an unreadable claim younger than this may still be being written by its holder."""
TEMP_GRACE_S = 60.0
"""Ours: a temporary index file (no claim guards it) younger than this may still be written."""
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}(?P<suffix>\.[^./]*)$")


def claim_path(sidecar: Path) -> Path:
    """The claim file of the output whose sidecar is ``sidecar``."""
    return sidecar.with_name(sidecar.name + CLAIM_SUFFIX)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def read_claim(path: Path) -> dict[str, Any] | None:
    """The claim's fields, or None when it is missing, empty or not a claim."""
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class ClaimBook:
    """Claims of one run (one writer on one rank).

    Args:
        timeout_s: age after which another host's claim counts as stale.
        host: this machine's name (tests pass another to act as a second host).
        pid: this process's id.
    """

    timeout_s: float = 7200.0
    host: str = ""
    pid: int = 0

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"claim timeout must be positive, got {self.timeout_s}")
        self.host = self.host or socket.gethostname()
        self.pid = self.pid or os.getpid()
        self.token = secrets.token_hex(8)
        self.held: set[Path] = set()

    # ------------------------------------------------------------------ queries
    def is_stale(self, path: Path, now: float | None = None) -> bool:
        """Whether the claim at ``path`` is abandoned (see the module docstring)."""
        now = time.time() if now is None else now
        claim = read_claim(path)
        if claim is None:
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                return True
            return age > EMPTY_CLAIM_GRACE_S
        if claim.get("token") == self.token:
            return False
        try:
            expired = now - float(claim.get("time", 0.0)) > self.timeout_s
        except (TypeError, ValueError):
            expired = True
        if expired:
            return True
        if claim.get("host") == self.host and isinstance(claim.get("pid"), int):
            return not _pid_alive(claim["pid"])
        return False

    def is_live(self, path: Path) -> bool:
        """A claim exists at ``path`` and is not stale."""
        return path.exists() and not self.is_stale(path)

    def holds(self, path: Path) -> bool:
        """This run's claim is the one at ``path``."""
        claim = read_claim(path)
        return claim is not None and claim.get("token") == self.token

    # ------------------------------------------------------------------ acquiring
    def _create(self, path: Path) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        body = {"pid": self.pid, "host": self.host, "time": time.time(), "token": self.token}
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(body) + "\n")
        self.held.add(path)
        return True

    @contextlib.contextmanager
    def _takeover_lock(self, folder: Path) -> Iterator[None]:
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def acquire(self, path: Path) -> bool:
        """Claim ``path``: create it, or take over a stale claim. False: a live run holds it."""
        if path in self.held and self.holds(path):
            return True
        if self._create(path):
            return True
        if not self.is_stale(path):
            return False
        with self._takeover_lock(path.parent):
            before = read_claim(path)
            if path.exists() and not self.is_stale(path):
                return False  # taken over by another run meanwhile
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            log.info("took over the stale claim %s (%s)", path, before or "unreadable")
            return self._create(path)

    def release(self, path: Path) -> None:
        """Remove this run's claim at ``path`` (a claim another run took over is left alone)."""
        self.held.discard(path)
        if self.holds(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def release_all(self) -> None:
        """Remove every claim this run still holds."""
        for path in list(self.held):
            self.release(path)


def remove_stale_temporaries(
    files: Iterable[Path], claims: ClaimBook, claim_of: dict[Path, Path]
) -> list[Path]:
    """Delete the temporary siblings that killed runs left next to ``files``.

    Only names of the atomic writers' pattern ``.{name}.{8 hex}{suffix}`` whose ``name``
    is one of ``files`` (and whose ``suffix`` is that file's) are candidates. One is
    removed when the output it belongs to has no live claim (``claim_of``: file → its
    output's claim), or, for files no claim guards (index CSVs), when it is older than
    :data:`TEMP_GRACE_S`.

    Returns:
        The removed paths.
    """
    by_folder: dict[Path, set[str]] = {}
    for file in files:
        by_folder.setdefault(file.parent, set()).add(file.name)
    removed = []
    now = time.time()
    for folder, names in by_folder.items():
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            match = _TEMPORARY.match(entry.name)
            if match is None or match["name"] not in names:
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            final = folder / match["name"]
            if match["suffix"] != final.suffix:
                continue
            claim = claim_of.get(final)
            if claim is not None:
                if claims.is_live(claim):
                    continue
            elif now - entry.stat(follow_symlinks=False).st_mtime <= TEMP_GRACE_S:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


__all__ = ["CLAIM_SUFFIX", "ClaimBook", "claim_path", "read_claim", "remove_stale_temporaries"]
