"""Checkpoints and tokenizers are data, configs never name code, downloads are verified: checked over
the source, so a new `torch.load` or a new download path cannot slip in unnoticed."""

import re
from pathlib import Path

import seqtrain

SOURCE = {p: p.read_text() for p in Path(seqtrain.__file__).parent.rglob("*.py")}


def test_every_torch_load_is_weights_only_and_nothing_unpickles():
    loads = [(p.name, call) for p, text in SOURCE.items() for call in re.findall(r"torch\.load\([^)]*\)", text)]
    assert loads and all("weights_only=True" in call for _, call in loads), loads
    assert not [
        p.name
        for p, text in SOURCE.items()
        if re.search(r"pickle\.loads?\(|yaml\.(unsafe_)?load\(|(?<![.\w])(eval|exec)\(", text)
    ]


def test_configs_are_never_executed_and_every_download_is_checksummed():
    assert not [
        p.name
        for p, text in SOURCE.items()
        if re.search(r"subprocess|os\.system|os\.popen|hydra\.utils\.instantiate|importlib", text)
        and p.name != "__init__.py"
    ]  # recipes/__init__.py imports seqtrain's own registered modules only
    network = [p.name for p, text in SOURCE.items() if re.search(r"urlopen|urlretrieve|requests\.", text)]
    assert network == ["download.py"]  # fetch() verifies sha256 before the file is moved into place
