"""Write tests/fixtures/train_golden/losses.json: the first training losses of a tiny fixed run.

    python tests/make_train_golden.py

The run is helpers.py's tiny model and topic data (those of test_train.py's runs) with warm-up,
linear decay, layer-wise decay, gradient accumulation, dropout and a log line per optimizer step;
test_train_golden.py repeats it and compares. An off-by-one in a schedule, in loss scaling under
accumulation or in the data order changes these numbers, so rerun this script only for a deliberate
change of the training math, and say why in the commit.
"""

import json
import sys
import tempfile
from pathlib import Path

# When run as a script: helpers.py (tests/) and the minibert package (the repository root).
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent.parent)]

GOLDEN = Path(__file__).parent / "fixtures" / "train_golden" / "losses.json"
STEPS = 12


def golden_run(tmp: Path) -> list[dict]:
    """The train records of the run: step, loss, lr."""
    import torch

    from minibert.finetune import finetune
    from helpers import config, make_tiny_model, write_split

    torch.set_num_threads(1)
    for name, n, seed in (("train", 60, 1), ("dev", 12, 2)):
        write_split(tmp / f"{name}.jsonl", n, seed)
    model = make_tiny_model(tmp / "model")
    # padding="padded": dropout masks are drawn per tensor shape, so the unpadded encoder (same math)
    # draws other masks and other losses; these were stored from the padded encoder, with the
    # default last_layer="needed" (the last layer's masks at [CLS] only).
    cfg = config(model, tmp, tmp / "run", epochs=2, batch_size=5, grad_accum_steps=2, log_every=1,
                 warmup_proportion=0.25, test_file="", pooler="true", padding="padded")
    finetune(cfg)
    records = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    return [{"step": r["step"], "loss": r["loss"], "lr": r["lr"]} for r in records if r["split"] == "train"][:STEPS]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        records = golden_run(Path(tmp))
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(records, indent=1) + "\n")
    print(f"wrote {GOLDEN}: {len(records)} steps")
