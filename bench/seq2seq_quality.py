"""Quality of the seq2seq recipe after a fixed training time on this machine.

    python bench/seq2seq_quality.py --task dates --minutes 10
    python bench/seq2seq_quality.py --task multi30k --root ../shared/data/multi30k --minutes 60

dates: exact match on 2,000 generated held-out dates (days never seen in training); characters, a
1-layer biGRU 128 encoder with additive attention. multi30k: sacrebleu BLEU (detokenised) on
test_2016_flickr, German -> English; a joint 8,000-piece sentencepiece unigram vocabulary, 2-layer
biGRU 256, additive attention, dropout 0.3, label smoothing 0.1, beam 5.

Trains through seqtrain itself (the same code as `seqtrain fit recipe=seq2seq`), then scores the test
split with `seqtrain evaluate`'s code. Validation decodes greedily (cheap) and keeps the checkpoint with
the best validation exact match / BLEU; the test split is decoded with the beam. The cosine schedule
needs a length: a short calibration times training steps of this model on batches of a typical length
and sizes max_steps to the budget; trainer.max_time stays a hard stop. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from rich.console import Console

from bench import common
from seqtrain import runs
from seqtrain.config import compose
from seqtrain.recipes import seq2seq

MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"

TASKS = {  # per task: data, model and optimiser overrides; typical (source, target) tokens; metric; beam
    "dates": dict(
        overrides=["data=dates", "data.n_train=100000", "data.n_valid=1000", "data.n_test=2000", "data.batch_size=64",
                   "model.cell=gru", "model.embedding_dim=64", "model.hidden_size=128", "model.num_layers=1",
                   "model.attention=additive", "model.dropout=0.1", "model.label_smoothing=0.0", "optim.lr=3e-3"],
        lengths=(16, 10), vocab=60, metric="exact_match", beam=1, validations=20,
    ),
    "multi30k": dict(
        overrides=["data=multi30k", "data.tokenizer=sentencepiece", "data.joint_vocab=true", "data.vocab_size=8000",
                   "data.sp_model_type=unigram", "data.batch_size=64", "model.cell=gru", "model.embedding_dim=256",
                   "model.hidden_size=256", "model.num_layers=2", "model.attention=additive", "model.dropout=0.3",
                   "model.label_smoothing=0.1", "optim.lr=2e-3"],
        lengths=(17, 16), vocab=8000, metric="bleu", beam=5, validations=12,
    ),
}


def steps_per_second(model_cfg: seq2seq.ModelConfig, vocab_size: int, batch: int, lengths: tuple[int, int]) -> float:
    """Training steps/s of the recipe's model and step on random batches of a typical length."""
    vocab = {"joint": True, "source": {"kind": "char", "symbols": [chr(0x4E00 + i) for i in range(vocab_size - 4)]}}
    src, tgt = lengths
    examples = [(torch.randint(4, vocab_size, (src,)).tolist(), torch.randint(4, vocab_size, (tgt,)).tolist(), None)
                for _ in range(batch)]
    data = seq2seq.collate_pairs(examples, 2, 3, 0)
    return common.steps_per_second(seq2seq.step, seq2seq.build_model(model_cfg, vocab), data)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", choices=TASKS, default="dates")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--root", default=str(MULTI30K), help="multi30k: the folder of the task-1 raw files")
    p.add_argument("--beam", type=int, default=None, help="beam for the test split (default: 1 dates, 5 multi30k)")
    p.add_argument("--run-dir", default=None)
    p.add_argument("overrides", nargs="*", help="extra seqtrain overrides, e.g. model.hidden_size=192")
    args = p.parse_args()

    task = TASKS[args.task]
    beam = args.beam or task["beam"]
    budget = args.minutes * 60
    overrides = [*task["overrides"], *([f"data.root={args.root}"] if args.task == "multi30k" else []), *args.overrides]
    probe = compose("seq2seq", [*overrides, "trainer.max_steps=1"])
    rate = steps_per_second(probe.model, task["vocab"], probe.data.batch_size, task["lengths"])
    max_steps = max(10, int(rate * budget * 0.9))  # validation, logging and data preparation take the rest
    warmup = min(200, max_steps // 10)
    run_dir = args.run_dir or tempfile.mkdtemp(prefix=f"seq2seq_quality-{args.task}-") + "/run"
    cfg = compose("seq2seq", [
        *overrides, "data.beam_size=1", "optim=adamw", "sched=cosine", f"sched.warmup_steps={warmup}", "sched.min_lr_ratio=0.05",
        "trainer.max_time=" + str(budget), f"trainer.max_steps={max_steps}",
        f"trainer.val_every_steps={max(1, max_steps // task['validations'])}", "trainer.val_max_batches=null",
        f"trainer.early_stopping.monitor={task['metric']}", "trainer.early_stopping.mode=max", f"run_dir={run_dir}",
    ])
    run_dir, _ = runs.fit(cfg, Console(stderr=True))
    test = runs.evaluate([Path(run_dir)], ["split=test", f"data.beam_size={beam}"])
    records = [json.loads(line) for line in open(Path(run_dir) / "metrics.jsonl")]
    train = [r for r in records if r["split"] == "train"]
    valid = [r[task["metric"]] for r in records if r["split"] == "valid"]
    m = cfg.model
    print(json.dumps({
        "benchmark": "seq2seq_quality", "task": args.task, task["metric"]: round(test[task["metric"]], 4),
        **{k: round(v, 4) for k, v in test.items() if k != task["metric"]},
        "test_set": f"{cfg.data.n_test} held-out dates" if args.task == "dates" else cfg.data.test_set, "beam": beam,
        f"best_valid_{task['metric']}": round(max(valid), 4), "steps": train[-1]["step"] if train else 0,
        "minutes": args.minutes,
        "model": f"{m.num_layers}x{m.hidden_size} bi{m.cell} encoder, {m.attention} attention, emb {m.embedding_dim}, "
                 f"dropout {m.dropout}, label smoothing {m.label_smoothing}, {cfg.data.tokenizer} tokens",
        "schedule": f"adamw lr {cfg.optim.lr}, warmup {warmup}, cosine to 5% over {max_steps} steps, batch {cfg.data.batch_size}",
        "run_dir": str(run_dir), "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
