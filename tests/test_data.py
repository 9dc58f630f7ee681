"""Corpora, caching, deterministic split and batches, clear errors for bad corpora."""
import numpy as np
import pytest
import torch

from trainer.config import DataError, TrainConfig
from trainer.data import Batches, load_tokens


@pytest.fixture
def cfg(tmp_path):
    def make(**kw):
        return TrainConfig(seq_len=32, batch_size=4, cache_dir=str(tmp_path / "cache"), **kw)
    return make


def test_kjv_is_real_english(cfg):
    tokens = load_tokens(cfg())
    text = bytes(tokens[:200]).decode()
    assert text.startswith("In the beginning God created the heaven and the earth.")
    assert len(tokens) > 3_000_000


def test_batches_are_deterministic_per_seed_and_split_is_disjoint(cfg):
    a, b, c = Batches(cfg(seed=0)), Batches(cfg(seed=0)), Batches(cfg(seed=1))
    x1, y1 = a.train(5)
    x2, _ = b.train(5)
    assert torch.equal(x1, x2) and torch.equal(y1[:, :-1], x1[:, 1:])
    assert not torch.equal(x1, c.train(5)[0]) and not torch.equal(x1, a.train(6)[0])
    assert torch.equal(a.val(0)[0], c.val(0)[0])  # one validation set for every seed
    assert not set(a.train_chunks) & set(a.val_chunks)
    assert len(a.val_chunks) / (len(a.val_chunks) + len(a.train_chunks)) == pytest.approx(0.05, abs=0.01)


def test_prepared_tokens_are_cached_once(cfg, tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("hello world " * 5000)
    load_tokens(cfg(corpus=str(f)))
    cached = list((tmp_path / "cache").glob("tokens-*.u8"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    tokens = load_tokens(cfg(corpus=str(f)))
    assert cached[0].stat().st_mtime_ns == mtime and bytes(tokens[:5]) == b"hello"


def test_text_directory_bin_and_parquet_corpora(cfg, tmp_path):
    d = tmp_path / "texts"
    d.mkdir()
    (d / "one.txt").write_text("alpha " * 20000)
    (d / "two.txt").write_text("beta " * 20000)
    tokens = load_tokens(cfg(corpus=str(d)))
    assert b"alpha" in bytes(tokens[:10]) and b"beta" in bytes(tokens[-10:])
    Batches(cfg(corpus=str(d))).train(0)

    ids = (np.arange(300_000) % 1000).astype(np.uint16)
    ids.tofile(tmp_path / "tok.bin")
    b = Batches(cfg(corpus=str(tmp_path / "tok.bin"), vocab_size=1000))
    assert b.train(0)[0].max() < 1000
    with pytest.raises(DataError, match="token id 999 >= vocab_size 256"):
        load_tokens(cfg(corpus=str(tmp_path / "tok.bin")))

    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"body": ["first document"] * 3000 + ["last one"] * 3000}), tmp_path / "t.parquet")
    tokens = load_tokens(cfg(corpus=str(tmp_path / "t.parquet"), parquet_column="body"))
    assert bytes(tokens[:14]) == b"first document"
    with pytest.raises(DataError, match=r"no column 'text'.*\['body'\]"):
        load_tokens(cfg(corpus=str(tmp_path / "t.parquet")))


def test_missing_empty_unreadable_and_tiny_corpora_name_the_path(cfg, tmp_path):
    with pytest.raises(DataError, match="nowhere.txt does not exist"):
        load_tokens(cfg(corpus=str(tmp_path / "nowhere.txt")))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        load_tokens(cfg(corpus=str(tmp_path / "empty.txt")))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="bad.parquet could not be read"):
        load_tokens(cfg(corpus=str(tmp_path / "bad.parquet")))
    (tmp_path / "tiny.txt").write_text("a few words")
    with pytest.raises(DataError, match="tiny.txt.*needs at least"):
        Batches(cfg(corpus=str(tmp_path / "tiny.txt")))
