"""Download a file once into a cache, verifying its SHA-256 before anything uses it."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from seqtrain.errors import DataError


def cache_dir(override: str | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    base = (
        os.environ.get("SEQTRAIN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "seqtrain"
    )
    return Path(base)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, sha256: str, name: str, directory: Path, hint: str) -> Path:
    """Return the cached file, downloading it first if needed. `hint` tells an offline user what to do."""
    target = directory / name
    if target.is_file() and sha256_of(target) == sha256:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{name}.part-{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
    except (urllib.error.URLError, OSError) as e:
        partial.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DataError(f"could not download {url} ({reason}); {hint}") from e
    got = sha256_of(partial)
    if got != sha256:
        partial.unlink(missing_ok=True)
        raise DataError(f"download of {url} has sha256 {got[:12]}…, expected {sha256[:12]}…; refusing to use it")
    os.replace(partial, target)
    return target
