"""3. Data: `prepare` throughput against Hugging Face `tokenizers` batch-encoding the same texts, and the data
loader's samples/s against what training consumes at the default config.

Like for like: the same trained byte-level BPE (bigtrain's `bpe` path, its default vocabulary) encodes the same
documents; bigtrain's figure is its prepare encoding stage (`encode_documents`: batches of documents, id arrays,
separators, the on-disk dtype), the baseline is one raw `Tokenizer.encode_batch` over all of them. Both count the
documents' tokens only. End-to-end `prepare` (read, hash, split, train the BPE, encode, write, checksum) is shown
for the bpe and the byte path beside the same baseline, as information.
"""

from __future__ import annotations

import time

from benchmarks.common import Context, Row, compose, median, plain_args, prepared_dir, ratio, run_plain


def _encode_rows(ctx: Context, max_bytes: int) -> list[Row]:
    from bigtrain.data.corpus import read_corpus
    from bigtrain.data.prepare import encode_documents, prepare, read_meta, token_dtype
    from bigtrain.data.tokenizer import HFTokenizer

    corpus = read_corpus("stdlib", max_bytes)
    docs = [d.text for d in corpus.documents]
    vocab = compose().data.bpe_vocab_size
    t0 = time.perf_counter()
    tok = HFTokenizer.train(docs, vocab)
    train_s = time.perf_counter() - t0
    eot = tok._tok.token_to_id("<|endoftext|>")
    dtype = token_dtype(tok.vocab_size)

    ours, hf = [], []
    for _ in range(ctx.repeats + 1):  # the first pair warms the tokenizer's caches for both
        t0 = time.perf_counter()
        stream = encode_documents(tok, docs, eot, dtype)
        ours.append((len(stream) - len(docs)) / (time.perf_counter() - t0))  # separators not counted
        t0 = time.perf_counter()
        n = sum(len(e.ids) for e in tok._tok.encode_batch(docs))
        hf.append(n / (time.perf_counter() - t0))
    ours, hf = ours[1:], hf[1:]
    baseline = median(hf)

    ends = {}
    for name in ("bpe", "byte"):
        rates = []
        for i in range(max(ctx.repeats - 1, 1)):
            cfg = compose(
                f"data.tokenizer={name}", f"data.max_bytes={max_bytes}", f"data.cache_dir={ctx.workdir}/prep-{name}-{i}"
            )
            t0 = time.perf_counter()
            folder = prepare(cfg.data, progress=False)
            wall = time.perf_counter() - t0
            meta = read_meta(folder)
            rates.append((meta["train_tokens"] + meta["val_tokens"]) / wall)
        ends[name] = rates

    mb = corpus.n_bytes / 1e6
    return [
        Row(
            "data",
            "prepare encoding, bpe (tokens/s)",
            median(ours),
            baseline,
            "tok/s",
            ratio(median(ours), baseline),
            ">= 0.8",
            f"{mb:.1f} MB of stdlib, {len(docs)} docs, vocab {tok.vocab_size}; baseline: raw HF encode_batch",
            {"bigtrain": ours, "hf_encode_batch": hf, "bpe_train_s": train_s},
        ),
        *(
            Row(
                "data",
                f"prepare end to end, {tokenizer}",
                median(ends[key]),
                baseline,
                "tok/s",
                ratio(median(ends[key]), baseline),
                "",
                note,
                {"bigtrain": ends[key]},
            )
            for key, tokenizer, note in (
                (
                    "bpe",
                    "bpe (incl. BPE training)",
                    f"read + hash + train BPE ({train_s:.1f} s of it) + encode + write + checksum",
                ),
                ("byte", "byte", "the default path (byte tokens) beside the same HF bpe baseline"),
            )
        ),
    ]


def _loader_row(ctx: Context) -> Row:
    from bigtrain.data import GPTDataModule

    cfg = compose(*(["model=nano", "data.max_bytes=2000000"] if ctx.quick else []))
    tr = cfg.trainer
    data = prepared_dir(ctx)
    dm = GPTDataModule(data, cfg.model.block_size, tr.micro_batch_size, 1, tr.val_batches, tr.seed)
    batches = 50 if ctx.quick else 2000
    rates = []
    for _ in range(ctx.repeats):
        it = iter(dm.train_dataloader())
        next(it)
        t0 = time.perf_counter()
        for _ in range(batches):
            x, _ = next(it)
        rates.append(batches * x.shape[0] / (time.perf_counter() - t0))
    loader = median(rates)

    trained = ctx.find("overhead", f"train tokens/s, {'nano' if ctx.quick else 'tiny (default)'}, mean of steps")
    if trained is not None and trained.value:
        consumed, source = trained.value / cfg.model.block_size, "bigtrain's tokens/s from the overhead bench"
    else:
        _, out = run_plain(plain_args(cfg, data, 4 if ctx.quick else 12), ctx)
        consumed, source = out["tokens_per_s"] / cfg.model.block_size, "a short plain-loop run"
    return Row(
        "data",
        "loader samples/s vs training's consumption",
        loader,
        consumed,
        "samples/s",
        ratio(loader, consumed),
        ">= 50",
        f"{batches} micro-batches of {tr.micro_batch_size}x{cfg.model.block_size}, num_workers=0; consumption: {source}",
        {"loader": rates},
    )


def run(ctx: Context) -> list[Row]:
    rows = _encode_rows(ctx, 300_000 if ctx.quick else 8_000_000)
    rows.append(_loader_row(ctx))
    return rows
