"""The search space reads Hydra's sweep grammar as Hydra's Optuna sweeper does (ranges as in `fit -m`),
and writes each drawn value back as an override that composes."""

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from seqtrain.errors import ConfigError
from seqtrain.search_space import parse


def test_the_grammar_maps_to_optuna_distributions():
    plain, params = parse(
        [
            "trainer.max_steps=5",
            "optim.lr=tag(log, interval(1e-4, 1e-2))",
            "model.dropout=interval(0, 0.5)",
            "model.hidden_size=int(interval(16, 64))",
            "model.num_layers=range(1, 4)",
            "model.cell=gru,lstm",
            "model.embedding_dim=choice(8, 16)",
        ]
    )
    assert plain == ["trainer.max_steps=5"]
    assert [p.distribution for p in params] == [
        FloatDistribution(1e-4, 1e-2, log=True),
        FloatDistribution(0.0, 0.5),
        IntDistribution(16, 64),
        IntDistribution(1, 3),  # range's end is excluded, as fit -m lists it
        CategoricalDistribution(("gru", "lstm")),
        CategoricalDistribution((8, 16)),
    ]


def test_drawn_values_come_back_as_overrides_and_the_grid_lists_them():
    _, params = parse(["model.cell=choice(gru, 'li gru')", "model.num_layers=range(1, 6, 2)"])
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    cell, layers = (p.suggest(trial) for p in params)
    assert cell in ("model.cell=gru", "model.cell=li\\ gru") and layers in (
        "model.num_layers=1",
        "model.num_layers=3",
        "model.num_layers=5",
    )
    assert [p.grid() for p in params] == [["gru", "li gru"], [1, 3, 5]]


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=tag(log, interval(0, 1e-2))", "needs a start above 0"),
        ("model.num_layers=range(3, 1)", "the range has no values"),
        ("model.cnn_channels=choice([4], [8])", "searched values must be numbers, strings, booleans or null"),
    ],
)
def test_spaces_that_cannot_be_searched_are_refused(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse([override])
