import hashlib
import http.server
import shutil
import threading
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from seqtrain.data.tables import (
    SST2_FILES,
    class_names,
    download_sst2,
    read_folders,
    read_sst2,
    read_table,
)
from seqtrain.errors import DataError

SST2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2"
needs_sst2 = pytest.mark.skipif(not (SST2 / "dev.tsv").is_file(), reason=f"{SST2} is absent")


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_tsv_reads_named_columns_literally(tmp_path):
    path = write(tmp_path / "a.tsv", 'id\tlabel\tsentence\n1\tpos\t"quoted at the start \n2\tneutral\tplain \n\n')
    assert read_table(path, "sentence", "label") == (['"quoted at the start', "plain"], ["pos", "neutral"])


def test_csv_follows_quoting_and_a_byte_order_mark(tmp_path):
    path = write(tmp_path / "a.csv", '\ufefftext,label\n"good, really",joy\n"a ""quoted"" word",anger\n')
    assert read_table(path) == (["good, really", 'a "quoted" word'], ["joy", "anger"])


def test_delimiter_by_option(tmp_path):
    path = write(tmp_path / "a.txt", "text;label\nhello;1\n")
    assert read_table(path, delimiter=";") == (["hello"], ["1"])
    with pytest.raises(DataError, match="cannot tell the delimiter"):
        read_table(path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("sentence\tlabel\nfine\t1\n", r"has no column 'text'; its columns: sentence, label"),
        ("", "is empty"),
        ("  \n", "is empty"),
        ("text\tlabel\n", r"is empty \(a header and no rows\)"),
        ("text\tlabel\nfine\t1\nbroken\n", "line 3: 1 fields, but the header has 2"),
        ("text\tlabel\nfine\t1\n\t0\n", "line 3: empty text"),
        (b"text\tlabel\nfine\t1\nbad \xff byte\t0\n", "not UTF-8 text \\(bad bytes on line 3\\)"),
    ],
)
def test_bad_tables_are_one_line_errors(tmp_path, content, message):
    with pytest.raises(DataError, match=message) as error:
        read_table(write(tmp_path / "bad.tsv", content))
    assert "\n" not in str(error.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="no such file: .*nothing.tsv"):
        read_table(tmp_path / "nothing.tsv")


def test_class_names_are_ordered_and_a_validation_only_label_is_named():
    assert class_names(["10", "2", "1", "2"], ["1"]) == ["1", "2", "10"]
    assert class_names(["pos", "neg"]) == ["neg", "pos"]
    with pytest.raises(
        DataError, match=r"label 'neutral' in dev.tsv never appears in training; training labels: neg, pos"
    ):
        class_names(["pos", "neg"], ["neg", "neutral"], "dev.tsv")


def test_folder_per_class_layout(tmp_path):
    root = tmp_path / "train"
    write(root / "pos" / "1.txt", "A moving film.\n")
    write(root / "pos" / "2.txt", "Loved it")
    write(root / "neg" / "1.txt", "Dull.")
    write(root / "unsup" / "9.txt", "no label")
    write(root / "notes" / "readme.md", "not a class")
    assert read_folders(root, classes=["neg", "pos"]) == (
        ["Dull.", "A moving film.", "Loved it"],
        ["neg", "pos", "pos"],
    )
    assert set(read_folders(root)[1]) == {"neg", "pos", "unsup"}
    with pytest.raises(DataError, match="no class folder 'neutral'; folders with .txt files: neg, pos, unsup"):
        read_folders(root, classes=["neutral"])
    with pytest.raises(DataError, match="no such folder"):
        read_folders(tmp_path / "test")
    with pytest.raises(DataError, match="has no class folders"):
        read_folders(root / "notes")
    write(root / "neg" / "2.txt", b"fine\n\xfe")
    with pytest.raises(DataError, match=r"2.txt is not UTF-8 text \(bad bytes on line 2\)"):
        read_folders(root, classes=["neg"])


@pytest.fixture
def served(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www; yields (folder, base url, request paths)."""
    folder = tmp_path / "www"
    folder.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/sst2", requests
    server.shutdown()
    server.server_close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_sst2_verifies_and_caches(tmp_path, served):
    folder, url, requests = served
    train = write(folder / "sst2" / "train_full.tsv", "sentence\tlabel\ngood \t1\nbad \t0\n")
    dev = write(folder / "sst2" / "dev.tsv", "sentence\tlabel\nfine \t1\n")
    files = {"train.tsv": ("train_full.tsv", sha256(train)), "dev.tsv": ("dev.tsv", sha256(dev))}
    cache = tmp_path / "cache" / "sst2"
    assert download_sst2(cache, url, files) == cache
    assert read_sst2(cache / "train.tsv") == (["good", "bad"], ["1", "0"])
    assert sorted(requests) == ["/sst2/dev.tsv", "/sst2/train_full.tsv"]
    download_sst2(cache, url, files)
    assert len(requests) == 2  # verified copies in the cache: no second download

    with pytest.raises(DataError, match="expected 000000000000"):
        download_sst2(tmp_path / "other", url, {"dev.tsv": ("dev.tsv", "0" * 64)})
    assert not list((tmp_path / "other").iterdir())  # nothing unverified is left behind
    with pytest.raises(DataError, match="could not download .*missing.tsv .*data.root"):
        download_sst2(tmp_path / "other", url, {"dev.tsv": ("missing.tsv", "0" * 64)})


@needs_sst2
def test_real_sst2_reads_with_the_published_counts():
    texts, labels = read_sst2(SST2 / "dev.tsv")
    assert len(texts) == 872 and Counter(labels) == {"1": 444, "0": 428}
    assert texts[0] == "it 's a charming and often affecting journey ."  # the trailing space is stripped
    texts, labels = read_sst2(SST2 / "train.tsv")
    assert len(texts) == 67349 and Counter(labels) == {"1": 37569, "0": 29780}


@needs_sst2
def test_the_pinned_checksums_match_the_real_files(tmp_path, served):
    folder, url, _ = served
    (folder / "sst2").mkdir()
    for name, (remote, _) in SST2_FILES.items():
        shutil.copyfile(SST2 / name, folder / "sst2" / remote)
    cache = download_sst2(tmp_path / "cache", url)
    assert sha256(cache / "dev.tsv") == sha256(SST2 / "dev.tsv")
