"""A run folder's type and lock.

    .minibert_run.json  what wrote the folder: {"kind": "fine-tuning" | "pre-training" | "reproduction"};
                        --overwrite_output_dir replaces only a folder of its own kind, and all of it
    .lock               the pid, host and command of the run writing the folder, locked with the OS's
                        advisory lock (flock) for the run's life: a second run on the folder refuses

A folder written before kinds were recorded has no kind: it is recognised as before (a run folder
by its files, output_paths.is_run_folder) and only the run's own outputs are replaced in it. A lock
whose process is gone (the file is there, nobody holds it) is stale and is taken over with a note.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from minibert.errors import ConfigError
from minibert.files import atomic_write_text

KIND_FILE, LOCK_FILE = ".minibert_run.json", ".lock"
FINE_TUNING, PRE_TRAINING, REPRODUCTION = "fine-tuning", "pre-training", "reproduction"
KIND_SCRIPTS = {FINE_TUNING: "train.py", PRE_TRAINING: "pretrain.py train", REPRODUCTION: "reproduce.py"}


def folder_kind(folder: Path) -> str | None:
    """The kind recorded in `folder` (None: none recorded, a folder from before kinds); a kind file
    that cannot be read or names no known kind is a ConfigError naming it."""
    path = Path(folder) / KIND_FILE
    try:
        kind = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from None
    if not isinstance(kind, dict) or kind.get("kind") not in KIND_SCRIPTS:
        raise ConfigError(f"{path}: kind is {json.dumps(kind)[:80]}, expected one of {', '.join(KIND_SCRIPTS)}")
    return kind["kind"]


def check_kind(folder: Path, kind: str, flag: str = "--output_dir") -> None:
    """A folder that records another kind is refused (replacing or resuming it would mix two runs)."""
    found = folder_kind(folder) if Path(folder).is_dir() else None
    if found is not None and found != kind:
        raise ConfigError(f"{flag} {folder} holds a {found} run ({KIND_SCRIPTS[found]}), not a {kind} run: "
                          "choose another folder")


def write_kind(folder: Path, kind: str) -> None:
    """Record `kind` in `folder` (made if need be)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(folder) / KIND_FILE, json.dumps({"kind": kind}) + "\n")


def clear_folder(folder: Path, keep: tuple[str, ...] = (LOCK_FILE,)) -> None:
    """Everything in `folder` removed but `keep` (the run's own lock): a run replacing a folder of its
    own kind replaces all of it, never leaving an earlier run's files beside its own."""
    for path in Path(folder).iterdir():
        if path.name in keep:
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def _holder(text: str) -> dict:
    """The lock file's {pid, host, command}; {} when it holds something else (a half-written file)."""
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else {}


def _is_this_process(holder: dict) -> bool:
    """Held by an earlier run of this very process (one that raised before closing, its file still open)."""
    return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}: {holder.get('command', '?')}"


def check_unlocked(folder: Path, flag: str = "--output_dir") -> None:
    """Refuse a folder whose lock another process holds; reads only (nothing is written)."""
    path = Path(folder) / LOCK_FILE
    try:
        with open(path, encoding="utf-8") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(file.read())
                if not _is_this_process(holder):
                    raise ConfigError(f"{flag} {folder} is in use by another run ({_describe(holder)}); "
                                      "wait for it to end or choose another folder") from None
            else:
                fcntl.flock(file, fcntl.LOCK_UN)
    except OSError:  # no lock file, or no folder to hold one (missing, a file, a symlink loop: named later)
        return


@dataclass
class RunLock:
    """The lock of one run folder, held from before the run writes anything until release()."""

    path: Path
    file: TextIO

    @classmethod
    def take(cls, folder: Path, say: Callable[[str], None], flag: str = "--output_dir") -> RunLock:
        """Lock folder/.lock (made if need be): another live run holding it is a ConfigError naming
        its pid; a stale lock (its process gone) is taken over with a note through `say`."""
        path = Path(folder) / LOCK_FILE
        for _ in range(5):  # a lock file released and removed between our open and lock: open it again
            file = open(path, "a+", encoding="utf-8")
            file.seek(0)
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(file.read())
                file.close()
                if not _is_this_process(holder):
                    raise ConfigError(f"{flag} {folder} is in use by another run ({_describe(holder)}); "
                                      "wait for it to end or choose another folder") from None
                path.unlink(missing_ok=True)  # this process's own earlier run, never closed: a fresh file
                continue
            if _same_file(file, path):
                return cls._own(path, file, say)
            file.close()
        raise ConfigError(f"{flag} {folder}: cannot take {path} (it keeps being replaced)")

    @classmethod
    def _own(cls, path: Path, file: TextIO, say: Callable[[str], None]) -> RunLock:
        previous = _holder(file.read())
        if previous and not _is_this_process(previous):
            say(f"note: took over the stale lock {path} of a run that is gone ({_describe(previous)})")
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
        file.seek(0)
        file.truncate()
        file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command}) + "\n")
        file.flush()
        return cls(path, file)

    def release(self) -> None:
        """Remove the lock file (while holding it, so no other run holds a removed file) and unlock."""
        if self.file.closed:
            return
        if _same_file(self.file, self.path):
            self.path.unlink(missing_ok=True)
        self.file.close()


def _same_file(file: TextIO, path: Path) -> bool:
    """Whether `path` still names the open `file` (not removed or replaced by a releasing run)."""
    try:
        return os.stat(path).st_ino == os.fstat(file.fileno()).st_ino
    except FileNotFoundError:
        return False
