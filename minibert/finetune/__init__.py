"""Fine-tuning a BERT classifier (Sun et al. 2019), one task or several: the typed config
(config.py), the tasks and their batches (tasks.py), the classifier and its optimisation
(model_setup.py), the one loop (loop.py), dev selection (selection.py), results (results.py) and
the whole run (run.py: `finetune(config)`).
"""

from minibert.finetune.config import FinetuneConfig
from minibert.finetune.loop import FitHooks
from minibert.finetune.results import summary_lines
from minibert.finetune.run import finetune

__all__ = ["FinetuneConfig", "FitHooks", "finetune", "summary_lines"]
