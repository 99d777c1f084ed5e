"""Scoring and inputs of classifier ensembles; the end-to-end ensemble runs are in test_sentiment.py."""

import math

import pytest
import torch

from seqtrain.ensembles import classifier_inputs, classifier_report, shared_classes
from seqtrain.errors import ConfigError, DataError
from seqtrain.recipe import SampleOptions
from seqtrain.recipes.sentiment import Sentiment


def test_classifier_report_scores_the_probabilities_it_is_given():
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    report = classifier_report(probabilities, torch.tensor([0, 1, 1]), ["neg", "pos"])
    assert report["accuracy"] == pytest.approx(2 / 3) and report["examples"] == 3
    assert report["confusion_matrix"] == [[1, 0], [1, 1]]  # row = true class
    assert report["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3)
    assert report["classes"] == ["neg", "pos"]


def member(recipe: str, classes: list[str]):
    return Sentiment(), torch.nn.Linear(1, 1), {"recipe": recipe, "vocab": {"classes": classes}}


def test_an_ensemble_needs_one_recipe_and_the_same_classes_in_the_same_order():
    assert shared_classes(["a", "b"], [member("sentiment", ["neg", "pos"])] * 2) == ["neg", "pos"]
    with pytest.raises(ConfigError, match="b predicts \\['pos', 'neg'\\], not \\['neg', 'pos'\\]"):
        shared_classes(["a", "b"], [member("sentiment", ["neg", "pos"]), member("sentiment", ["pos", "neg"])])
    with pytest.raises(ConfigError, match="b is a run of recipe speech, not sentiment"):
        shared_classes(["a", "b"], [member("sentiment", ["neg", "pos"]), member("speech", ["neg", "pos"])])


def test_inputs_are_one_text_or_the_non_blank_lines_of_a_file(tmp_path):
    assert classifier_inputs(SampleOptions(text="fine")) == ["fine"]
    (tmp_path / "in.txt").write_text("good\n\n  bad  \n")
    assert classifier_inputs(SampleOptions(input_file=str(tmp_path / "in.txt"))) == ["good", "bad"]
    with pytest.raises(ConfigError, match="one of them"):
        classifier_inputs(SampleOptions(text="fine", input_file=str(tmp_path / "in.txt")))
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(DataError, match="has no text"):
        classifier_inputs(SampleOptions(input_file=str(tmp_path / "blank.txt")))
