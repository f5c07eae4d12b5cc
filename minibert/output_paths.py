"""One policy for every path a script writes, checked before anything is read or written.

    output file     (predict.py --output, pretrain.py corpus|vocab --output_file, a .tfrecord): may
                    be new or an existing file; never an existing folder, never one of the inputs
    output folder   (train.py/pretrain.py train --output_dir, a records folder, a converted DST):
                    written only if it is new, empty or recognisably ours (`ours` says what that is
                    for each kind), never a file, never an input, an init model or a folder that
                    holds one

What a command reads is listed as Inputs, (option, path) pairs, built with the helpers below so that
every script protects the same things: a file, a folder read whole (a model folder, a data set's
folder: the folder and every file in it, so `--output MODEL/vocab.txt` is refused as well as
`--output MODEL`), the data sets a command reads under --data_dir (their split files, whether they
exist yet or not), and the --preset file (cli.run_script checks a script's output files against it).

Paths are compared after resolving symlinks (a loop is one error line) and the resolved target is
what gets written: a symlinked output folder stays a link and its target is replaced. Replacing an
earlier output happens only later, after every input has been read and every option checked
(RunContext.start_output_dir, files.replace_folder), never here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from minibert.errors import ConfigError

# (option, path) of what a script reads: an output may not be one of these or a folder above one.
Inputs = Iterable[tuple[str, str | Path]]

# The split files of a data set folder in the project's format (data/<name>/prepare.py writes them).
DATASET_SPLITS = ("train", "dev", "test")


def folder_inputs(flag: str, folder: str | Path) -> list[tuple[str, Path]]:
    """A folder read as a whole (a model folder, a data set's folder): the folder and every file
    under it, so an output may be neither the folder, nor a folder above it, nor one of its files.
    A folder that does not exist (yet) protects its path only."""
    if not str(folder):
        return []
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    return [(flag, folder)] + [(flag, path) for path in files]


def dataset_inputs(flag: str, data_dir: str | Path, names: Iterable[str]) -> list[tuple[str, Path]]:
    """The data sets `names` under `data_dir` (named `FLAG NAME` in messages): each one's folder read
    whole and its split files, also those a preparation step would write before they are read."""
    inputs = []
    for name in names:
        folder, named = Path(data_dir) / name, f"{flag} {name}"
        inputs += folder_inputs(named, folder) + [(named, folder / f"{split}.jsonl") for split in DATASET_SPLITS]
    return inputs


def resolve(path: str | Path, flag: str) -> Path:
    """The absolute path with every symlink resolved; a symlink loop is a ConfigError."""
    try:
        return Path(os.path.abspath(path)).resolve(strict=False)
    except (OSError, RuntimeError) as e:  # ELOOP; Python < 3.13 raises RuntimeError for loops
        raise ConfigError(f"{flag} {path}: cannot be resolved ({e.__class__.__name__}: a symlink loop?)") from None


def visible_entries(folder: Path) -> list[str]:
    """The names in a folder that a user would see (hidden temporaries of a killed write are not)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def check_not_input(out: Path, flag: str, inputs: Inputs) -> None:
    """Refuse an output that is an input, or a folder holding one (writing it would replace it)."""
    for input_flag, path in inputs:
        if not path:
            continue
        source = resolve(path, input_flag)
        if out == source:
            raise ConfigError(f"{flag} {out} is also {input_flag}: writing it would replace what is read")
        if out in source.parents:
            raise ConfigError(f"{flag} {out} holds {input_flag} {source}: writing it would replace what is read")


def check_output_file(path: str | Path, flag: str, inputs: Inputs = ()) -> Path:
    """An output file's resolved path: its folder may be made; an existing folder there is refused."""
    if not str(path):
        raise ConfigError(f"{flag} is required")
    out = resolve(path, flag)
    if out.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; give a file name")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{flag} {path}: {parent} is a file, not a folder")
    check_not_input(out, flag, inputs)
    return out


def check_output_folder(path: str | Path, flag: str, ours: Callable[[Path], bool], what: str,
                        inputs: Inputs = (), hint: str = "") -> Path:
    """An output folder's resolved path, refused when it is a file, an input (or holds one) or a
    non-empty folder that `ours` does not recognise (`what` names what would be recognised; `hint`
    is added to that message)."""
    if not str(path):
        raise ConfigError(f"{flag} is required")
    out = resolve(path, flag)
    check_not_input(out, flag, inputs)  # first: an input file given as the folder is named as an input
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {path}: is a file, not a folder")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{flag} {path}: {parent} is a file, not a folder")
    if out.is_dir() and visible_entries(out) and not ours(out):
        entries = visible_entries(out)
        raise ConfigError(f"{flag} {path}: holds files that are not {what} ({', '.join(entries[:5])}"
                          f"{', ...' if len(entries) > 5 else ''}){'; ' + hint if hint else ''}; nothing was written: "
                          "choose another folder")
    return out


def is_run_folder(folder: Path) -> bool:
    """A minibert run's output folder: config.json beside metrics.jsonl or last/, or a config.json
    holding the run's options (with output_dir: a run that stopped before its first record)."""
    if not (folder / "config.json").is_file():
        return False
    if any((folder / name).exists() for name in ("metrics.jsonl", "last")):
        return True
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(config, dict) and "output_dir" in config


def is_records_folder(folder: Path, format_name: str) -> bool:
    """A records folder that create_data wrote: its manifest.json names `format_name`."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == format_name
