"""Errors minibert raises for bad user input: each message names the file, line, key or tensor."""


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model (names the file and the tensor)."""


class DataError(ValueError):
    """A data file has a row that cannot be used (names the file and the line)."""
