"""Beam search decode speed in sentences/s: all sentences x beams in one batch vs. one sentence at a time.

    python bench/beam_speed.py [--sentences 200] [--beam 5] [--threads 1]

An untrained Seq2Seq (GRU, 2 layers, encoder 128 per direction so the decoder is 256 wide, 8000-token
vocabularies): speed does not depend on the weights, but an untrained model almost never emits EOS, so
every hypothesis runs to the max length (a * source length + b): the slowest case. Sources are random
ids with 8-24 tokens, the range of Multi30k sentences in subword units. Both ways decode the same
sentences and must give the same best hypotheses. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from seqtrain.data.collate import pad
from seqtrain.models.decoding import SearchOptions, beam_search
from seqtrain.models.seq2seq import Seq2Seq

BOS, EOS = 1, 2


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--sentences", type=int, default=200)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=200, help="sentences per batched call")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--hidden", type=int, default=128, help="encoder size per direction; the decoder is twice it")
    p.add_argument("--threads", type=int, default=1)
    return p


def main() -> None:
    args = parser().parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Seq2Seq(args.vocab, args.vocab, "gru", 256, args.hidden, num_layers=2, attention="general").eval()
    lengths = torch.randint(8, 25, (args.sentences,)).tolist()
    sources = [torch.randint(3, args.vocab, (n,)) for n in lengths]
    options = SearchOptions(beam_size=args.beam, max_len_a=1.2, max_len_b=5)

    start = time.perf_counter()
    batched = []
    for i in range(0, len(sources), args.batch_size):
        batched += beam_search(model, *pad(sources[i : i + args.batch_size]), BOS, EOS, options)
    batched_s = time.perf_counter() - start

    start = time.perf_counter()
    alone = [beam_search(model, *pad([s]), BOS, EOS, options)[0] for s in sources]
    alone_s = time.perf_counter() - start

    agree = sum(a[0].tokens == b[0].tokens for a, b in zip(alone, batched)) / len(sources)
    target_tokens = sum(len(n[0].tokens) for n in batched)
    print(
        json.dumps(
            {
                "bench": "beam_speed",
                "sentences": args.sentences,
                "beam": args.beam,
                "batch_size": args.batch_size,
                "vocab": args.vocab,
                "decoder_hidden": 2 * args.hidden,
                "threads": args.threads,
                "mean_target_tokens": round(target_tokens / len(sources), 1),
                "batched_sentences_per_s": round(len(sources) / batched_s, 1),
                "one_at_a_time_sentences_per_s": round(len(sources) / alone_s, 1),
                "speedup": round(alone_s / batched_s, 2),
                "same_best_hypotheses": agree,
            }
        )
    )


if __name__ == "__main__":
    main()
