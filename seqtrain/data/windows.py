"""Language-model examples cut from one long token array (which may be a memory map)."""

from __future__ import annotations

import numpy as np
import torch

from seqtrain.data.collate import batch_stats, pad

IGNORE = -100  # target id that cross_entropy skips


class WindowDataset(torch.utils.data.Dataset):
    """Non-overlapping windows: example i predicts tokens[i*L+1 : i*L+L+1] from tokens[i*L : i*L+L].

    The last window may be shorter; it is padded in its batch and masked from the loss.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int):
        self.tokens = tokens
        self.seq_len = seq_len
        n_predicted = len(tokens) - 1
        self.lengths = [min(seq_len, n_predicted - s) for s in range(0, max(0, n_predicted), seq_len)]

    def __len__(self) -> int:
        return len(self.lengths)

    def window(self, start: int, length: int) -> dict:
        chunk = torch.from_numpy(self.tokens[start : start + length + 1].astype(np.int64))
        return {"tokens": chunk[:-1], "targets": chunk[1:]}

    def __getitem__(self, index: int) -> dict:
        return self.window(index * self.seq_len, self.lengths[index])


class StreamDataset(WindowDataset):
    """Windows laid out for truncated BPTT: the text is cut into `streams` contiguous parts, and read in
    order, item `i * streams + r` is window i of part r. Batches of `streams` items taken in order
    therefore continue each row of the previous batch, so the hidden state can be carried across them.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, streams: int):
        windows_per_stream = (len(tokens) - 1) // (seq_len * streams)
        if windows_per_stream == 0:
            raise ValueError(f"text too short for {streams} streams of {seq_len} characters")
        super().__init__(tokens, seq_len)
        self.streams = streams
        self.stream_len = windows_per_stream * seq_len
        self.lengths = [seq_len] * (windows_per_stream * streams)

    def __getitem__(self, index: int) -> dict:
        window, stream = divmod(index, self.streams)
        item = self.window(stream * self.stream_len + window * self.seq_len, self.seq_len)
        item["stream"] = "start" if window == 0 else "continue"
        return item


def collate_windows(items: list[dict]) -> dict:
    tokens, lengths = pad([it["tokens"] for it in items], 0)
    targets, _ = pad([it["targets"] for it in items], IGNORE)
    batch = {"tokens": tokens, "targets": targets, "lengths": lengths, **batch_stats(lengths)}
    if "stream" in items[0]:
        batch["stream"] = items[0]["stream"]
    return batch
