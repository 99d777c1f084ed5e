"""SST-2 dev accuracy of the sentiment recipe trained from scratch (no pretrained embeddings) in a fixed time.

    python bench/sentiment_quality.py --root ../shared/data/sst2 --minutes 20

Trains through seqtrain itself (the same code as `seqtrain fit recipe=sentiment data=sst2`): a word
vocabulary from the training split plus hashed character 3-5-gram vectors (data.subword_buckets, so
the many dev words unseen in training are read from their spelling), a 2-layer biLSTM with additive
self-attention pooling, word dropout, Xavier input and orthogonal recurrent weights (forget-gate bias
1), AdamW, label smoothing, a cosine schedule, and a moving average of the weights (trainer.ema_decay)
as the model that is scored. The schedule needs a length: a short calibration times training steps of
this model on real bucketed batches on this machine and sizes max_steps to the budget;
trainer.max_time stays a hard stop.

The budget is split over `--members K` runs (default 5) with different seeds, and `accuracy` is that of
their ensemble (class probabilities averaged, as `seqtrain evaluate RUN1 RUN2 ...` does): validation
loss is lowest after about 2 epochs and rises after that, so five 4-minute runs (about 2 epochs each)
use 20 minutes better than three longer ones or one.

Prints one JSON line. `accuracy` is the dev accuracy of the final (averaged) weights (no selection on dev),
`raw_weights_accuracy` that of the same runs' raw final weights;
`best_accuracy` is the best of the periodic validations, which selects on dev itself and so reads high.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import tempfile
from pathlib import Path

import torch
from rich.console import Console

from bench import common
from seqtrain import ensembles, runs
from seqtrain.config import compose
from seqtrain.data.sampler import BucketBatchSampler
from seqtrain.recipes import sentiment

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def steps_per_second(cfg, timed: int = 40) -> float:
    """Training steps/s of the recipe's model on real training batches as the length-bucketing sampler
    draws them (SST-2's lengths are skewed: most rows are short phrases, a few are long sentences), with
    the vocabulary the run learns."""
    prepared = sentiment.prepare(cfg.data, None, ("train",))
    train = prepared.splits["train"]
    sampler = BucketBatchSampler(train.lengths, cfg.data.batch_size, seed=cfg.trainer.seed)
    batches = [prepared.collate([train[i] for i in indices]) for indices in itertools.islice(sampler, timed + 3)]
    return common.steps_per_second(sentiment.step, sentiment.build_model(cfg.model, prepared.vocab), batches)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(SST2), help="folder with SST-2's train.tsv and dev.tsv")
    p.add_argument("--minutes", type=float, default=20)
    p.add_argument("--cell", default="lstm", help="model.cell: lstm, gru, rnn_tanh, rnn_relu")
    p.add_argument("--embedding", type=int, default=300)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--pooling", default="attention")
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--word-dropout", type=float, default=0.1)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--min-freq", type=int, default=1)
    p.add_argument("--tokenizer", default="word", help="data.tokenizer: word, sentencepiece, char")
    p.add_argument("--vocab-size", type=int, default=8000, help="data.vocab_size (sentencepiece)")
    p.add_argument("--subword-buckets", type=int, default=32768, help="data.subword_buckets: hashed character n-gram vectors added to each word (0 = off)")
    p.add_argument("--init", default="xavier", help="model.init: default, xavier, kaiming")
    p.add_argument("--recurrent-init", default="orthogonal", help="model.recurrent_init: default, orthogonal, xavier")
    p.add_argument("--ema-decay", type=float, default=0.999, help="trainer.ema_decay (0 = off): a moving average of the weights is what is scored")
    p.add_argument("--seed", type=int, default=1234, help="the first member's seed; member k has seed + k")
    p.add_argument("--validations", type=int, default=20)
    p.add_argument("--max-rows", type=int, default=None, help="smoke tests: read only this many rows of each split")
    p.add_argument("--members", type=int, default=5, help="an ensemble of this many runs, splitting the time budget")
    p.add_argument("--run-dir", default=None)
    args = p.parse_args()

    model = [
        f"model.cell={args.cell}", f"model.embedding_dim={args.embedding}", f"model.hidden_size={args.hidden}", f"model.num_layers={args.layers}",
        "model.bidirectional=true", f"model.pooling={args.pooling}", f"model.dropout={args.dropout}",
        f"model.embedding_dropout={args.word_dropout}", f"model.label_smoothing={args.label_smoothing}",
        f"model.init={args.init}", f"model.recurrent_init={args.recurrent_init}",
    ]
    shared = [
        *model, "data=sst2", f"data.root={args.root}", f"data.batch_size={args.batch}", f"data.min_freq={args.min_freq}",
        f"data.tokenizer={args.tokenizer}", f"data.vocab_size={args.vocab_size}", f"data.subword_buckets={args.subword_buckets}",
        f"data.max_rows={'null' if args.max_rows is None else args.max_rows}",
    ]
    budget = args.minutes * 60 / args.members
    rate = steps_per_second(compose("sentiment", shared))
    max_steps = max(10, int(rate * budget * 0.9))  # validation and logging take a few percent
    base = Path(args.run_dir or tempfile.mkdtemp(prefix="sentiment_quality-"))
    run_dirs, averaged, raw = [], [], []  # per member: run dir, dev probabilities of averaged and raw weights
    for member in range(args.members):
        cfg = compose("sentiment", [
            *shared,
            "optim=adamw", f"optim.lr={args.lr}", f"optim.weight_decay={args.weight_decay}",
            "sched=cosine", "sched.warmup_steps=200", "sched.min_lr_ratio=0.02",
            "trainer.max_epochs=null", f"trainer.max_steps={max_steps}", f"trainer.max_time={budget}",
            f"trainer.val_every_steps={max(1, max_steps // args.validations)}", "trainer.early_stopping.patience=null",
            "trainer.log_every_steps=100", f"trainer.ema_decay={args.ema_decay or 'null'}", f"trainer.seed={args.seed + member}", f"run_dir={base / str(member)}",
        ])
        run_dir, _ = runs.fit(cfg, Console(file=io.StringIO()))
        member_averaged, member_raw, labels = final_probabilities(run_dir, cfg)
        run_dirs.append(run_dir)
        averaged.append(member_averaged)
        raw.append(member_raw)
    names = sentiment.classes(json.loads((run_dirs[0] / "vocab.json").read_text()))
    reports = [ensembles.classifier_report(probabilities, labels, names) for probabilities in averaged]
    ensemble = ensembles.classifier_report(sum(averaged) / len(averaged), labels, names)
    raw_ensemble = ensembles.classifier_report(sum(raw) / len(raw), labels, names)
    records = [json.loads(line) for run_dir in run_dirs for line in open(run_dir / "metrics.jsonl")]
    valid = [r for r in records if r["split"] == "valid"]
    train = [r for r in records if r["split"] == "train"]
    epochs = [r for r in records if r["split"] == "epoch"]
    print(json.dumps({
        "benchmark": "sentiment_quality", "accuracy": round(ensemble["accuracy"], 4), "macro_f1": round(ensemble["macro_f1"], 4),
        "members": args.members, "member_accuracy": [round(r["accuracy"], 4) for r in reports],
        "raw_weights_accuracy": round(raw_ensemble["accuracy"], 4),
        "best_accuracy": round(max(r["accuracy"] for r in valid), 4), "minutes": args.minutes,
        "steps_per_member": max_steps, "epochs_completed": valid[-1]["epoch"],
        "padding_efficiency": round(epochs[-1]["padding_efficiency"], 4) if epochs else None,
        "tokens_per_s": round(sum(r["tokens_per_s"] for r in train) / max(1, len(train))),
        "model": f"{args.tokenizer} vocab ({f'min_freq {args.min_freq}' if args.tokenizer != 'sentencepiece' else f'{args.vocab_size} pieces'}), "
                 f"{args.subword_buckets or 'no'} character n-gram buckets, emb {args.embedding}, {args.layers}x{args.hidden} bi{args.cell.upper()}, "
                 f"{args.pooling} pooling, dropout {args.dropout}, word dropout {args.word_dropout}, "
                 f"init {args.init}/{args.recurrent_init}, weight EMA {args.ema_decay or 'off'}",
        "schedule": f"adamw lr {args.lr} wd {args.weight_decay}, label smoothing {args.label_smoothing}, batch {args.batch}, "
                    f"warmup 200, cosine to 2% over {max_steps} steps per member (calibrated at {rate:.1f} steps/s)",
        "run_dir": str(base), "torch_threads": torch.get_num_threads(),
    }))


def final_probabilities(run_dir: Path, cfg) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dev-set class probabilities of a run's final weights (last.pt, not the checkpoint chosen on dev):
    the averaged weights the run keeps, and the raw ones it trained (the same without EMA); dev labels."""
    module, model, state = runs.load_model(run_dir / "checkpoints" / "last.pt")
    prepared = module.prepare(cfg.data, state["vocab"], ("valid",))
    dev = prepared.splits["valid"]
    averaged = ensembles.class_probabilities(module, model, dev, prepared.collate, cfg.data)
    if "training_model" not in state:  # no EMA: the kept weights are the raw ones
        return averaged, averaged, dev.labels
    model.load_state_dict(state["training_model"])
    return averaged, ensembles.class_probabilities(module, model, dev, prepared.collate, cfg.data), dev.labels

if __name__ == "__main__":
    main()
