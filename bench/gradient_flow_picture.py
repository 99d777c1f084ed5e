"""The picture of vanishing gradients through time: a tanh RNN against an LSTM, same data, same initialisation.

    python bench/gradient_flow_picture.py [--out docs/img/gradient_flow.png] [--length 100] [--seed 0]

Two untrained many-to-one classifiers (one layer, 32 units, reading random tokens, predicting a random label
from the last state) with seqtrain's `model.init=default model.recurrent_init=orthogonal`: orthogonal
recurrent matrices for both and, for the LSTM, forget-gate biases at 1. For one batch of 32 sequences of
`--length` tokens, the mean ‖∂loss/∂h_t‖ at each distance from the end (seqtrain/models/gradient_flow.py), one
curve per model on a log scale, saved as a PNG. Prints one JSON line with both first/last ratios.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.nn import functional as F

from seqtrain.models.classifier import SequenceClassifier
from seqtrain.models.gradient_flow import gradient_flow
from seqtrain.models.init import initialize
from seqtrain.plots import save_gradient_flow

LABELS = {"rnn_tanh": "tanh RNN", "lstm": "LSTM, forget-gate bias 1"}


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/img/gradient_flow.png")
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main() -> None:
    args = parser().parse_args()

    g = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(1, 50, (32, args.length), generator=g)  # (B, T), the same batch for both models
    labels = torch.randint(0, 2, (32,), generator=g)
    lengths = torch.full((32,), args.length)
    curves, ratios = {}, {}
    for cell, label in LABELS.items():
        torch.manual_seed(args.seed)
        model = SequenceClassifier(
            50, 2, 32, cell, 32, num_layers=1, bidirectional=False, pooling="last", dropout=0.0, embedding_dropout=0.0
        )
        initialize(model, "default", "orthogonal")
        flow = gradient_flow(model, lambda m: F.cross_entropy(m(tokens, lengths), labels))
        ratios[cell] = flow.ratios["rnn/layer0/forward"]
        curves[f"{label}: first/last = {ratios[cell]:.1e}"] = flow.norms["rnn/layer0/forward"]
    path = save_gradient_flow(curves, args.out, title=f"Gradient through time, {args.length} random tokens, untrained")
    print(
        json.dumps(
            {
                "length": args.length,
                "rnn_tanh_ratio": ratios["rnn_tanh"],
                "lstm_ratio": ratios["lstm"],
                "out": str(path),
            }
        )
    )


if __name__ == "__main__":
    main()
