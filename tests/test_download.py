import hashlib
import http.server
import threading
from functools import partial

import pytest

from seqtrain.data.download import fetch
from seqtrain.errors import DataError


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_fetch_downloads_once_and_verifies(server, tmp_path):
    root, url = server
    (root / "input.txt").write_text("First Citizen:\n")
    digest = hashlib.sha256(b"First Citizen:\n").hexdigest()
    path = fetch(f"{url}/input.txt", digest, "ts.txt", tmp_path / "cache", hint="")
    assert path.read_text() == "First Citizen:\n"
    (root / "input.txt").unlink()
    assert fetch(f"{url}/input.txt", digest, "ts.txt", tmp_path / "cache", hint="") == path  # from the cache


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(server, tmp_path):
    root, url = server
    (root / "input.txt").write_text("tampered")
    with pytest.raises(DataError, match="refusing to use it"):
        fetch(f"{url}/input.txt", "0" * 64, "ts.txt", tmp_path / "cache", hint="")
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="use data=text"):
        fetch("http://127.0.0.1:9/input.txt", "0" * 64, "ts.txt", tmp_path / "cache", hint="use data=text")
