"""Errors minibert raises for bad user input: each message names the file, line, key or tensor.

The scripts print a MinibertError as one line (minibert.cli.run_script); anything else is a bug and
keeps its traceback.
"""


class MinibertError(ValueError):
    """Bad input, described in one line that names where the problem is."""


class CheckpointError(MinibertError):
    """A checkpoint cannot be read or does not fit the model (names the file and the tensor)."""


class DataError(MinibertError):
    """A data file has a row that cannot be used (names the file and the line)."""


class ConfigError(MinibertError):
    """A model config or a script option has a value that cannot work (names the key or option)."""


class MissingPackageError(MinibertError):
    """A package that holds the embedded default material is not installed (names the pip command)."""
