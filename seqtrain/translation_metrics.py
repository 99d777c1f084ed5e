"""BLEU and chrF (sacrebleu) and exact match, as additive statistics.

sacrebleu scores a corpus from n-gram counts summed over its sentences, so a recipe's `step` can
return each batch's counts, the trainer sums them like any other statistic, and `summarize` gives
exactly `sacrebleu.corpus_bleu` / `corpus_chrf` of the whole set however it was batched. The
hypotheses and references are detokenised text: sacrebleu tokenises them itself (13a for BLEU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from sacrebleu.metrics import BLEU, CHRF

_BLEU, _CHRF = BLEU(), CHRF()


def translation_stats(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, torch.Tensor]:
    """One reference per hypothesis -> summed counts: bleu (10,), chrf (18,), exact and sentences ()."""
    refs = [list(references)]
    # sacrebleu's own per-sentence sufficient statistics; summing them is what corpus_score does.
    bleu = torch.tensor(_BLEU._extract_corpus_statistics(list(hypotheses), refs), dtype=torch.long).sum(0)
    chrf = torch.tensor(_CHRF._extract_corpus_statistics(list(hypotheses), refs), dtype=torch.long).sum(0)
    exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references))
    return {"bleu": bleu, "chrf": chrf, "exact": torch.tensor(exact), "sentences": torch.tensor(len(references))}


def translation_metrics(totals: dict[str, torch.Tensor]) -> dict[str, float]:
    """Summed counts -> bleu and chrf (0-100, as sacrebleu reports them) and exact_match (0-1)."""
    return {
        "bleu": _BLEU._compute_score_from_stats(totals["bleu"].tolist()).score,
        "chrf": _CHRF._compute_score_from_stats(totals["chrf"].tolist()).score,
        "exact_match": float(totals["exact"]) / max(1, int(totals["sentences"])),
    }
