"""Convert BERT checkpoints between Google TF, Hugging Face and minibert folders.

    python checkpoints_convert.py SRC DST [--format minibert|hf|tf] [--config FILE] [--overwrite true] [--debug]

SRC is a Google checkpoint (release folder, prefix or .index file), a Hugging Face folder or a
minibert folder; its format is detected. The script prints what was mapped and skipped, loads every
tensor into the model the checkpoint holds (nothing missing, nothing extra), then writes DST as a
new folder: it is built under a temporary name, read back, compared with SRC tensor by tensor and
run on a sentence, and only then swapped in for DST. DST may be new, empty or SRC's own folder
(converting in place); a DST holding another model is replaced only with --overwrite true, and
never when it holds anything but checkpoint files, or holds SRC. A symlinked DST stays a link (its
target is replaced). Bad input ends in one line `error: ...` and exit status 2 (the traceback with
--debug).
"""

from minibert.checkpoints.conversion import ConvertConfig, convert
from minibert.cli import run_script

if __name__ == "__main__":
    run_script(convert, ConvertConfig, None, __doc__, positional=("src", "dst"))
