"""One writer per stage and per run: advisory file locks that name their holder.

Two processes writing the same stage would clean up each other's temporaries and race to
rename their outputs into place, so a stage (and a whole `molab run`) is written under a lock.
The lock is `fcntl.flock` on a small file that records the holder's process id and host:

- A second process fails at once with a one-line error naming the holder (it does not wait:
  a stage can take hours, and a queue of stalled processes is worse than a clear message).
- A lock left by a killed process is stale by construction: the kernel drops `flock` locks
  when their process dies, so the next writer takes it over and says whose lock it was.
- The file is removed on release. Whoever opened the file before it was removed may then hold
  a lock on a file nobody else can see, so after locking we check that the path still names
  the file we locked, and start over if not.

On file systems without `flock` (some network mounts) the lock falls back to the recorded
process id: the holder counts as live while that process exists on this host.

`waiting` is the other kind: for a short job every process needs done once (unpacking a model
into the cache), a second process waits for the first instead of failing, then finds it done.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from molab.errors import MolabError

log = logging.getLogger(__name__)


def _holder(path: Path) -> dict:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _alive(info: dict) -> bool:
    """Whether the process recorded in `info` still runs (on this host; another host's counts)."""
    pid = info.get("pid")
    if not isinstance(pid, int):
        return False
    if info.get("host") != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy(path: Path, what: str, info: dict) -> MolabError:
    who = f"process {info.get('pid', '?')}"
    if info.get("host") and info["host"] != socket.gethostname():
        who += f" on {info['host']}"
    since = f" since {info['since']}" if info.get("since") else ""
    return MolabError(
        f"{what} is being written by {who}{since} (lock {path}): wait for it to finish or stop it"
    )


@contextmanager
def exclusive(path: str | Path, what: str) -> Iterator[None]:
    """Hold the lock file `path` for the body; `what` names the locked thing in errors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat()}
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise MolabError(f"cannot write {what}: cannot create {path} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(path, what, _holder(path)) from None
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            yield from _pid_lock(path, what, record)
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed it between our open and our lock: try again
    try:
        previous = _holder(path)
        if previous.get("pid") not in (None, os.getpid()):
            log.warning(
                "took over the lock %s of process %s, which is no longer running", path, previous["pid"]
            )
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _pid_lock(path: Path, what: str, record: dict) -> Iterator[None]:
    """The fallback without `flock`: create the file exclusively; a dead holder's is replaced."""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            info = _holder(path)
            if _alive(info) or (not info and time.time() - path.stat().st_mtime < 5):
                raise _busy(path, what, info) from None  # (an empty file is one being written)
            log.warning(
                "took over the lock %s of process %s, which is no longer running", path, info.get("pid")
            )
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record))
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
        return
    raise _busy(path, what, _holder(path))


@contextmanager
def waiting(path: str | Path) -> Iterator[None]:
    """Hold the lock file `path` for the body, waiting while another process holds it. The file
    stays (removing it would let a waiter lock a file nobody else can see)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
