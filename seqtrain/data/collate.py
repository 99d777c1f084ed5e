"""Padding and masks.

Every batch is a dict of tensors. Sequence fields come padded with their lengths and a boolean mask
(True = real position), so that models can pack or mask and padding never changes a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def pad(sequences: Sequence[torch.Tensor], pad_value: float = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length sequences (T_i, ...) into (B, T_max, ...) plus their lengths (B,)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    padded = torch.nn.utils.rnn.pad_sequence(list(sequences), batch_first=True, padding_value=pad_value)
    return padded, lengths


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, T) boolean mask, True at real positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def batch_stats(lengths: torch.Tensor) -> dict[str, int]:
    """Real and padded element counts; the trainer reports throughput and padding efficiency from them."""
    return {"num_tokens": int(lengths.sum()), "padded_tokens": int(lengths.numel() * lengths.max())}


def device_of(model: torch.nn.Module) -> torch.device:
    """Where a model's weights are; CPU for a module without any (an export run through onnxruntime)."""
    return next(model.parameters(), torch.empty(0)).device


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensors of a batch; leave plain values alone."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
