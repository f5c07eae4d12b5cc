"""Encoded data that a node's processes share: written once, memory-mapped by all.

Under torchrun every process trains on the same encoded documents. Encoding them in each process
costs N times the tokenizing time and N copies in memory; instead each node's writer process
(local rank 0) encodes them once into numpy .npy files, and every process of the node waits for it
and maps the files (np.load with mmap_mode="r"): the operating system keeps one copy of the pages
for all of them. A single process needs no cache and writes nothing (TokenCache()).

The cache is a folder of entries, one per part (e.g. "task/train") and key:
- the key is everything the arrays depend on (features.tokens_key: a digest of the texts as read,
  of the vocabulary file, the tokenizer's and the encoding's settings, the storage format). The
  entry's folder is named by the key's sha256 and holds key.json, compared in full before any
  array is read: an entry made from other data or settings is never used.
- an entry is written in a temporary folder (named after the host, so writers of several nodes
  sharing a file system never touch each other's) and renamed into place when complete: a killed
  writer leaves a temporary, never a half entry. The next writer on that host removes it.
- once its entry is in place the writer removes the entries of the same part with another key
  (the data or settings changed), so a cache holds one entry per part.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.errors import DataError

CACHE_FOLDER = ".token_cache"  # in a run's output folder (RunContext.token_cache); hidden, as other run internals
KEY_FILE = "key.json"
TEMP_SUFFIX = ".tmp"


def _alone(ok: bool) -> bool:
    return ok


@dataclass(frozen=True)
class TokenCache:
    """Where the encoded arrays of a run are shared.

    folder: the cache folder; None keeps everything in this process's memory and writes nothing.
    writer: this process writes the node's entries (local rank 0); the others only read them.
    agree: a collective call every process makes with its own flag; returns whether all are true
      (the writer says whether it succeeded, so the others never wait for, or read, a failed write).
    """

    folder: Path | None = None
    writer: bool = True
    agree: Callable[[bool], bool] = _alone

    @property
    def shared(self) -> bool:
        """Whether arrays go through the cache's files (else build() is all there is to it)."""
        return self.folder is not None

    def arrays(self, part: str, key: dict, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """build()'s arrays: built and written by the writer unless a valid entry exists, then read
        (memory-mapped) by every process. Every process of the job must call this together."""
        if not self.shared:
            return build()
        full_key = {"part": part, **key}
        digest = hashlib.sha256(json.dumps(full_key, sort_keys=True).encode()).hexdigest()
        entry = self.folder / digest
        if self.writer:
            try:
                if read_entry(entry, full_key) is None:
                    write_entry(entry, full_key, build())
                remove_stale(self.folder, part, digest)
            except Exception:
                self.agree(False)
                raise
        if not self.agree(True):
            raise DataError(f"{self.folder}: the process encoding {part!r} failed (its error says why)")
        arrays = read_entry(entry, full_key)
        if arrays is None:
            raise DataError(f"{entry}: the encoded {part!r} written for this run is missing or damaged")
        return arrays


def read_entry(entry: Path, key: dict) -> dict[str, np.ndarray] | None:
    """The entry's arrays, memory-mapped read-only, or None when it is missing, incomplete or has another key."""
    try:
        saved = json.loads((entry / KEY_FILE).read_text(encoding="utf-8"))
        if not isinstance(saved, dict) or saved.get("key") != key:
            return None
        return {name: np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in saved["arrays"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_entry(entry: Path, key: dict, arrays: dict[str, np.ndarray]) -> None:
    """Save the arrays and key.json into a temporary folder, then rename it to `entry`."""
    temp = entry.parent / f".{entry.name}.{socket.gethostname()}{TEMP_SUFFIX}"
    shutil.rmtree(temp, ignore_errors=True)  # this host's writer was killed while writing it
    temp.mkdir(parents=True)
    try:
        for name, values in arrays.items():
            np.save(temp / f"{name}.npy", np.ascontiguousarray(values), allow_pickle=False)
        # key.json last: an entry without it is never read.
        (temp / KEY_FILE).write_text(json.dumps({"key": key, "arrays": list(arrays)}, indent=1) + "\n",
                                     encoding="utf-8")
        for path in temp.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())  # on disk before the rename makes the entry visible
        shutil.rmtree(entry, ignore_errors=True)  # an entry read_entry refused (damaged)
        try:
            temp.rename(entry)
        except OSError:
            if read_entry(entry, key) is None:  # another node's writer on a shared file system was first
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def remove_stale(folder: Path, part: str, keep: str) -> None:
    """Remove the entries of `part` other than `keep`, and this host's leftover temporaries."""
    host_temp = f".{socket.gethostname()}{TEMP_SUFFIX}"
    for path in folder.iterdir():
        if path.name == keep:
            continue
        if path.name.startswith(".") and path.name.endswith(host_temp):
            shutil.rmtree(path, ignore_errors=True)
            continue
        try:
            saved = json.loads((path / KEY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not an entry (another host's temporary, or something else): left alone
        if isinstance(saved, dict) and isinstance(saved.get("key"), dict) and saved["key"].get("part") == part:
            shutil.rmtree(path, ignore_errors=True)
