"""Data plumbing shared by every recipe: batching, padding, tokenizers, readers."""
