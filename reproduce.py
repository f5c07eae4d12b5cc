"""Reproduce a table or figure of "How to Fine-Tune BERT for Text Classification?" (Sun et al. 2019).

    python reproduce.py table2 --init uncased_L-12_H-768_A-12 --init_chinese chinese_L-12_H-768_A-12
    python reproduce.py table4 --scale small --datasets bbc_news --seeds 1,2,3    # 2-core CPU budget
    python reproduce.py table6 --datasets imdb,trec --devices cuda:0,cuda:1       # one run per GPU
    python reproduce.py figure3 --scale small --datasets bbc_news                 # pre-training, then fine-tuning
    python reproduce.py table1                          # the prepared data sets' counts and lengths vs Table 1

The experiments are defined in minibert/experiments/paper.py (table2 ... table8, figure2 ...
figure4): each row names what differs from the paper's recipe. Every row x data set x seed is one
fine-tuning run (as train.py's) under OUTPUT/<scale>/<experiment>/<data set>/<row>/seed<k>/; runs
with a results.json are skipped and interrupted runs continue from their last/ checkpoint, so the
same command picks up where it stopped. Rows that fine-tune a further pre-trained model (Figure 3,
Table 5, the ITPT / IDPT / CDPT rows) first get it from pre-training (corpus -> create_data ->
train, as pretrain.py's), once per corpus, starting model and settings under
OUTPUT/<scale>/pretrain/<corpus>_<model>_<settings digest>/, shared by every row, data set and seed
that needs it, skipped when finished and resumed when interrupted. The run writes
OUTPUT/<scale>/<experiment>/RESULTS.md (our test error rates, mean ± std over seeds, beside the
paper's) and, for figures, a PNG per data set in the paper's form. Rows that cannot run (a model
or a corpus's data set that is missing) are listed with the reason. --dry_run prints the plan and
the table and writes nothing. When any run failed the command ends with a summary line and exit
status 1. --output_dir is new, empty or an earlier reproduce.py output, never the data folder.
"""

import sys
from pathlib import Path

from minibert.cli import run_script
from minibert.experiments.reproduction import ReproduceConfig, reproduce


def main(cfg: ReproduceConfig) -> str:
    text, runs = reproduce(cfg)
    print(text)
    failed = [run for run in runs if run.state == "failed"]
    for run in failed:
        print(f"failed: {run.folder}: {run.error}")
    folder = Path(cfg.output_dir) if cfg.experiment == "table1" else Path(cfg.output_dir) / cfg.scale / cfg.experiment
    if not cfg.dry_run:
        print(f"table: {folder / ('table1.md' if cfg.experiment == 'table1' else 'RESULTS.md')}")
    if failed:
        folders = len({run.folder for run in failed})
        print(f"{folders} of {len({run.folder for run in runs})} runs failed (listed above); the same command "
              "runs them again", file=sys.stderr)
        raise SystemExit(1)
    return text


if __name__ == "__main__":
    run_script(main, ReproduceConfig, None, __doc__, positional=("experiment",))
