"""Fine-tune a BERT text classifier with the strategies of "How to Fine-Tune BERT for Text
Classification?" (Sun, Qiu, Xu, Huang 2019).

    python train.py                                   # embedded default: MiniLM on BBC News, CPU
    python train.py --preset my_settings.json --init uncased_L-12_H-768_A-12   # JSON of these options
    python train.py --tasks imdb,yelp_polarity,ag_news,dbpedia --init uncased_L-12_H-768_A-12 \\
        --max_seq_length 512 --learning_rate 2e-5       # multi-task (paper §4.3) with train.py's defaults;
                                                        # Table 7's BERT-MFiT-FiT settings: reproduce.py table7
    python reproduce.py table2 ...                    # the paper's experiments (see reproduce.py)

Every option is a field of minibert.finetune.FinetuneConfig (flags have the same names). The run
writes to output_dir: best/ (the best classifier by dev error, a minibert folder with
classifier.json), last/ (the checkpoint --resume continues from), metrics.jsonl (per-step and
per-evaluation records), results.json (dev and test metrics of the best model),
learning_curves.png, config.json. A non-empty output_dir is continued with --resume or, when it
is a minibert run folder, replaced with --overwrite_output_dir (never the --init model or the data
files, or a folder holding them). SIGTERM finishes the step, saves last/ and exits with status 143;
Ctrl-C does the same and exits with status 130.

Multi-task (--tasks or --tasks_file): stage 1 trains one shared encoder with a head per task; every
batch comes from one task, an epoch lists every task's batches and shuffles them (MT-DNN;
--task_temperature samples instead; --task_sampling random redraws each batch, as the paper's code),
and the best model has the lowest mean dev error over the tasks. Stage 2 fine-tunes each task alone
from that model, keeping its head (--stage2_head fresh: a new one, as the paper's code), at a lower
learning rate (--stage2_lr_factor, --stage2_epochs) in output_dir/stage2/<task>/. best/ then holds every
task's head (predict.py --task NAME); multitask_results.json stage 1's scores; results.json every
task's scores after each stage and their means. Under torchrun every process lists the same mixed
epoch, so all ranks train the same task at each step, each on its slice of that task's batch.
"""

from minibert.cli import run_script
from minibert.finetune import FinetuneConfig, finetune, summary_lines


def main(cfg: FinetuneConfig) -> dict:
    results = finetune(cfg)
    if results and not results.get("stopped"):  # rank 0 of a torchrun job; the other ranks print nothing
        print("\n".join(summary_lines(results, cfg.run.output_dir)))
    return results


if __name__ == "__main__":
    run_script(main, FinetuneConfig, None, __doc__)
