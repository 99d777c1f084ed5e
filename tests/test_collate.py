import torch

from seqtrain.data.collate import batch_stats, lengths_to_mask, pad, to_device


def test_pad_returns_lengths_and_pads_with_the_value():
    padded, lengths = pad([torch.tensor([1, 2, 3]), torch.tensor([4])], pad_value=-1)
    assert padded.tolist() == [[1, 2, 3], [4, -1, -1]]
    assert lengths.tolist() == [3, 1]


def test_mask_marks_real_positions():
    mask = lengths_to_mask(torch.tensor([3, 1]))
    assert mask.tolist() == [[True, True, True], [True, False, False]]


def test_batch_stats_count_real_and_padded_tokens():
    assert batch_stats(torch.tensor([3, 1])) == {"num_tokens": 4, "padded_tokens": 6}


def test_to_device_moves_tensors_and_keeps_plain_values():
    batch = to_device({"x": torch.ones(2), "n": 3, "stream": "start"}, torch.device("cpu"))
    assert batch["n"] == 3 and batch["stream"] == "start" and torch.is_tensor(batch["x"])
