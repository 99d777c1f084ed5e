from collections import Counter

import torch

from seqtrain.data.synthetic_sentiment import LABELS, make_splits


def test_deterministic_from_the_seed_and_sized_in_pairs():
    a, b = make_splits(200, 50, seed=3), make_splits(200, 50, seed=3)
    assert a == b and make_splits(200, 50, seed=4) != a
    assert len(a["train"][0]) == 200 and len(a["valid"][0]) == 50
    assert len(make_splits(201, 51, seed=0)["train"][0]) == 200  # whole mirrored pairs only
    assert set(a["train"][1]) == set(LABELS)


def test_no_sentence_repeats_within_or_across_splits():
    splits = make_splits(4000, 1000, seed=0)
    texts = splits["train"][0] + splits["valid"][0]
    assert len(set(texts)) == len(texts)


def test_every_bag_of_words_occurs_equally_often_in_both_classes():
    for texts, labels in make_splits(4000, 1000, seed=1).values():
        per_class = Counter((tuple(sorted(t.split())), y) for t, y in zip(texts, labels))
        for (bag, label), count in per_class.items():
            other = LABELS[1 - LABELS.index(label)]
            assert per_class[(bag, other)] == count, " ".join(bag)


def test_a_bag_of_words_classifier_stays_at_chance():
    """Logistic regression on word counts (unigrams) cannot beat a coin; the labels need word order."""
    splits = make_splits(4000, 1000, seed=2)
    vocab = {w: i for i, w in enumerate(sorted({w for t in splits["train"][0] for w in t.split()}))}

    def counts(texts, labels):
        x = torch.zeros(len(texts), len(vocab))
        for row, text in enumerate(texts):
            for word in text.split():
                x[row, vocab[word]] += 1
        return x, torch.tensor([LABELS.index(y) for y in labels])

    x, y = counts(*splits["train"])
    x_valid, y_valid = counts(*splits["valid"])
    torch.manual_seed(0)
    model = torch.nn.Linear(len(vocab), 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        train_accuracy = (model(x).argmax(1) == y).float().mean().item()
        valid_accuracy = (model(x_valid).argmax(1) == y_valid).float().mean().item()
    assert train_accuracy < 0.55 and valid_accuracy < 0.55, (train_accuracy, valid_accuracy)
