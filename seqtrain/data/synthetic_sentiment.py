"""The embedded default sentiment corpus: generated English sentences in which word order decides the label.

Why generated: the recipe must run with no download, and a toy corpus that a bag of words solves would
teach nothing about recurrent models. Here a bag of words is at chance *by construction*.

How a sentence is made. A clause is an adjective with at most one modifier:
- plain:       "brilliant"                     keeps the adjective's polarity
- negated:     "not brilliant", "never boring"  flips it
- intensified: "very dull", "slightly funny"    keeps it; the intensifier says how strongly

Two clauses of opposite polarity fill a template about a subject ("the plot", "this movie", ...):
- contrast templates name the clause that wins:
  "the film is dull at first , but brilliant in the end"  -> the second clause wins (positive)
  "the film is dull , even though it is brilliant"       -> the first clause wins (negative)
- the intensity template "the film is very dull and slightly funny": the strongly intensified clause
  wins (negative); its two clauses are always one strong ("very", ...) and one weak ("slightly", ...).

Every sentence comes with its mirror, in the same split: the contrast clauses swapped, or the two
intensifiers swapped. The mirror uses exactly the same words and has the opposite label, so every bag
of words occurs equally often in both classes and no classifier of word counts can beat 50%. A model
that reads in order (an RNN) has to learn which clause a template makes win, and what "not", "never",
"very" and "slightly" do to the adjective right after them.

Generation is deterministic from the seed. No sentence occurs twice, within or across splits.
"""

from __future__ import annotations

import random

LABELS = ("negative", "positive")
SUBJECTS = ("the film", "this movie", "the plot", "the acting", "the ending", "the script", "the story", "the cast")
POSITIVE = (
    "good",
    "brilliant",
    "moving",
    "funny",
    "clever",
    "charming",
    "gripping",
    "beautiful",
    "fresh",
    "delightful",
)
NEGATIVE = ("bad", "boring", "dull", "awful", "clumsy", "tedious", "bland", "predictable", "silly", "forgettable")
NEGATORS = ("not", "never", "hardly")
STRONG = ("very", "extremely", "truly", "incredibly")
WEAK = ("slightly", "somewhat", "mildly", "a little")

# (template, index of the winning clause)
CONTRAST = (
    ("{s} is {0} at first , but {1} in the end", 1),
    ("{s} is {0} , but {1}", 1),
    ("although {s} is {0} , it is {1}", 1),
    ("{s} is {0} , even though it is {1}", 0),
    ("{s} is {0} rather than {1}", 0),
)
INTENSITY = "{s} is {0} and {1}"

Clause = tuple[str, int]  # (words, polarity: +1 positive, -1 negative)
Example = tuple[str, str]  # (sentence, label)


def adjective(rng: random.Random, polarity: int) -> str:
    return rng.choice(POSITIVE if polarity > 0 else NEGATIVE)


def contrast_clause(rng: random.Random, polarity: int) -> str:
    """Words of a clause whose overall polarity is `polarity`: plain, negated or intensified."""
    kind = rng.random()
    if kind < 0.35:
        return f"{rng.choice(NEGATORS)} {adjective(rng, -polarity)}"
    if kind < 0.65:
        return f"{rng.choice(STRONG + WEAK)} {adjective(rng, polarity)}"
    return adjective(rng, polarity)


def contrast_pair(rng: random.Random, subject: str) -> tuple[Example, Example]:
    template, winner = rng.choice(CONTRAST)
    first = rng.choice((-1, 1))
    clauses = (contrast_clause(rng, first), contrast_clause(rng, -first))
    label = first if winner == 0 else -first
    return (
        (template.format(*clauses, s=subject), LABELS[label > 0]),
        (template.format(*clauses[::-1], s=subject), LABELS[label < 0]),  # clauses swapped: the other one wins
    )


def intensity_pair(rng: random.Random, subject: str) -> tuple[Example, Example]:
    first = rng.choice((-1, 1))
    adjectives = (adjective(rng, first), adjective(rng, -first))
    strong, weak = rng.choice(STRONG), rng.choice(WEAK)
    return (
        (INTENSITY.format(f"{strong} {adjectives[0]}", f"{weak} {adjectives[1]}", s=subject), LABELS[first > 0]),
        (INTENSITY.format(f"{weak} {adjectives[0]}", f"{strong} {adjectives[1]}", s=subject), LABELS[first < 0]),
    )


def generate(n_pairs: int, rng: random.Random, seen: set[str], intensity_share: float = 0.35) -> list[Example]:
    """`n_pairs` mirrored pairs of sentences not in `seen` (which grows), shuffled."""
    examples: list[Example] = []
    while len(examples) < 2 * n_pairs:
        subject = rng.choice(SUBJECTS)
        pair = intensity_pair(rng, subject) if rng.random() < intensity_share else contrast_pair(rng, subject)
        if pair[0][0] in seen or pair[1][0] in seen:
            continue
        seen.update(text for text, _ in pair)
        examples.extend(pair)
    rng.shuffle(examples)
    return examples


def make_splits(n_train: int = 10000, n_valid: int = 1000, seed: int = 0) -> dict[str, tuple[list[str], list[str]]]:
    """{"train": (texts, labels), "valid": (texts, labels)}, sizes rounded down to whole mirrored pairs."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits = {}
    for name, size in (("train", n_train), ("valid", n_valid)):
        examples = generate(size // 2, rng, seen)
        splits[name] = ([text for text, _ in examples], [label for _, label in examples])
    return splits
