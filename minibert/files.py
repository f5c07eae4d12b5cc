"""Writing files so that a crash never leaves a half-written file or folder under the final name.

Every file minibert writes goes through `atomic_file` (or `atomic_write` for writers that want a
path): the bytes go to a temporary file beside the target, named `.<name>.<random>.tmp`, are
flushed to disk (fsync), and only then renamed over the target, so a reader sees the old file or
the new one, never half of one. A replaced file keeps its permissions. Folders are swapped in the
same way by `replace_folder`, whose old side also has a fresh name (`.<name>.<random>.old`), so a
swap never deletes anything it did not create. `remove_leftovers` deletes the temporaries that a
killed process left; `swap_leftovers` names what a swap may leave beside a folder.
"""

import contextlib
import glob
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

TEMP_SUFFIX = ".tmp"
OLD_SUFFIX = ".old"
# The old side of a folder swap: .<name>.<8 hex digits>.old (group 1: the swapped folder's name).
_OLD_NAME = re.compile(r"^\.(.+)\.[0-9a-f]{8}\.old$")


def temp_path(path: Path, suffix: str = TEMP_SUFFIX) -> Path:
    """A fresh temporary name beside `path` (what remove_leftovers recognises)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")


def _mode_for(path: Path) -> int:
    """The permission bits a new file at `path` gets: those of the file it replaces, else 0o666
    minus the umask (what open() would give; tempfile.mkstemp would give 0o600)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable: fsync the folder that holds the entry (POSIX; a no-op elsewhere)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def commit(temp: Path, path: Path) -> None:
    """Give the written temporary file `path`'s permissions, fsync it and rename it over `path`."""
    os.chmod(temp, _mode_for(path))
    with open(temp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temp, path)
    _fsync_folder(path.parent)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call write(temporary path) beside `path`, then commit the result over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(path)
    try:
        write(temp)
        commit(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator:
    """Open a temporary file for writing ("w" text as UTF-8 with \\n line ends, or "wb"); when the
    block ends without an exception it replaces `path` (see atomic_write)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    text = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(path)
    try:
        with open(temp, mode, **text) as f:
            yield f
        commit(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict) -> None:
    atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))


def atomic_torch_save(obj, path: str | Path) -> None:
    atomic_write(path, lambda temp: torch.save(obj, temp))


def replace_folder(folder: str | Path, fill: Callable[[Path], None]) -> None:
    """Build a folder with fill(temporary folder), then swap it in for `folder`.

    The old folder is renamed to a fresh `.<folder>.<random>.old` before the new one takes its place
    and removed after, so at every moment one complete copy exists (`find_folder` picks it up after
    a crash) and nothing but what this call renamed is deleted (a user's `<folder>.old` stays).
    A symlink is followed: the folder it points to is replaced and the link stays a link.
    """
    folder = Path(folder)
    if folder.is_symlink():
        folder = folder.resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(folder)
    temp.mkdir()
    old = None
    try:
        fill(temp)
        if folder.exists():
            old = temp_path(folder, OLD_SUFFIX)
            os.replace(folder, old)
        os.replace(temp, folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _fsync_folder(folder.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def swap_leftovers(name: str) -> tuple[str, str]:
    """Globs of the old sides a replace_folder of `name` (a name or a glob) may leave beside it: a
    run that clears its outputs clears these with them."""
    return f".{name}.*{OLD_SUFFIX}", f"{name}{OLD_SUFFIX}"


def find_folder(folder: str | Path) -> Path | None:
    """`folder`, or the old copy replace_folder left if it was interrupted between its renames (the
    newest `.<folder>.<random>.old`, or `<folder>.old` from before those names were random)."""
    folder = Path(folder)
    if folder.exists():
        return folder
    olds = sorted(folder.parent.glob(f".{glob.escape(folder.name)}.*{OLD_SUFFIX}"), key=_mtime)
    olds = [p for p in olds if _OLD_NAME.match(p.name)]
    legacy = folder.with_name(folder.name + OLD_SUFFIX)
    return olds[-1] if olds else (legacy if legacy.exists() else None)


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


def remove_leftovers(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporaries (`.<name>.<random>.tmp` files and folders) a killed writer left in
    `folder`, and the old sides of finished swaps (`.<name>.<random>.old` whose <name> exists);
    with `name`, only those of that target. Returns what was removed.

    Call it only on a folder this process owns (a run's output folder), never while another
    process may be writing there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f".{glob.escape(name)}.*" if name else ".*"
    removed = []
    for path in folder.glob(pattern):
        old = _OLD_NAME.match(path.name)
        if not path.name.endswith(TEMP_SUFFIX) and not (old and (folder / old.group(1)).exists()):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 16 MB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def read_json_object(path: str | Path, what: str, error: type[Exception]) -> dict:
    """A JSON file that must hold one object, read for `what` ("config", "preset", ...); a key given
    twice is refused (json.loads would keep the last silently). Any problem raises `error` with one
    line naming the file."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=refuse_repeated_keys)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise error(f"{path}: cannot read {what}: {e}") from None
    if not isinstance(value, dict):
        raise error(f"{path}: a {what} must be a JSON object, got {type(value).__name__}")
    return value


def refuse_repeated_keys(pairs: list) -> dict:
    """json.loads' object_pairs_hook: a key given twice is a ValueError (JSON keeps the last silently)."""
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"key {', '.join(repeated)} given twice")
    return dict(pairs)
