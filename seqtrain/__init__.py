"""seqtrain: train recurrent and attention sequence models from the command line."""

__version__ = "0.1.0"
