"""Errors a user can fix: the CLI prints them as one line and exits with their code, no traceback."""

from __future__ import annotations

from collections.abc import Sequence


class SeqtrainError(Exception):
    """Something the user can act on; `exit_code` 2 means bad input, 1 means the run itself failed."""

    exit_code = 1


class ConfigError(SeqtrainError):
    """A bad override, option or value."""

    exit_code = 2


class DataError(SeqtrainError):
    """Data that is missing, empty or malformed."""

    exit_code = 2


class CheckpointError(SeqtrainError):
    """A checkpoint that cannot be read, belongs elsewhere, or cannot be written."""

    exit_code = 2


class TrainingError(SeqtrainError):
    """The run cannot go on (for example a non-finite loss); earlier checkpoints are kept."""

    exit_code = 1


class Interrupted(SeqtrainError):
    """SIGTERM or Ctrl-C: the trainer saved a checkpoint and stopped cleanly."""

    exit_code = 130


def check_choices(section: str, choices: dict[str, tuple[str, Sequence[str]]]) -> None:
    """Refuse the first value of `choices` (key -> (value, valid values)) that is not among its valid ones,
    as one line naming `section.key` and what is valid."""
    for key, (value, valid) in choices.items():
        if value not in valid:
            raise ConfigError(f"{section}.{key}={value!r} is unknown; valid: {', '.join(valid)}")
