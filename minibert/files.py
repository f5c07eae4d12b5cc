"""Writing files so that a crash never leaves a half-written file or folder under the final name."""

import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file


def _atomic(path: Path, write) -> None:
    """Call write(temporary path) in path's folder, then rename the result over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict) -> None:
    _atomic(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def atomic_torch_save(obj, path: str | Path) -> None:
    _atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def replace_folder(folder: str | Path, fill) -> None:
    """Build a folder with fill(temporary folder), then swap it in for `folder`.

    The old folder is renamed to `<folder>.old` before the new one takes its place and removed
    after, so at every moment one complete copy exists (`find_folder` picks it up after a crash).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    old = folder.with_name(folder.name + ".old")
    try:
        fill(tmp)
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def find_folder(folder: str | Path) -> Path | None:
    """`folder`, or the `.old` copy replace_folder left if it was interrupted between its renames."""
    folder = Path(folder)
    old = folder.with_name(folder.name + ".old")
    return folder if folder.exists() else (old if old.exists() else None)
