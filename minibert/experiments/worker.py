"""One run of the reproduction runner in a process of its own (minibert.experiments.reproduction,
several devices): `python -m minibert.experiments.worker KIND REQUEST.json`, KIND being `finetune`
or a pre-training stage (minibert.pretraining.STAGES); REQUEST.json holds the config's options, read
as a --preset. Bad input ends as train.py's and pretrain.py's do: one line `error: ...`, exit 2.
"""

import sys

from minibert.cli import run_script
from minibert.finetune import FinetuneConfig, finetune
from minibert.pretraining import STAGES

KINDS = {"finetune": (finetune, FinetuneConfig), **{name: (function, config) for name, (function, config, _) in
                                                     STAGES.items()}}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in KINDS:
        raise SystemExit(f"usage: python -m minibert.experiments.worker {{{','.join(KINDS)}}} REQUEST.json")
    function, config_class = KINDS[sys.argv[1]]
    run_script(function, config_class, ["--preset", sys.argv[2]], __doc__)
