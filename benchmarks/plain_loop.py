"""The baseline: a minimal hand-written PyTorch training loop over bigtrain's own GPT module and prepared data.

Same model class, micro-batch, AdamW (decay groups, foreach on CPU / fused on GPU), warmup + cosine schedule,
gradient clipping and precision as a bigtrain run; none of Lightning, Hydra, logging or checkpointing. Run as a
script (`python benchmarks/plain_loop.py --data DIR ...`) it prints one JSON line: time to its first step (from
interpreter start), and tokens/s timed per step exactly as bigtrain's Throughput callback times them (the first
step left out). Imports are kept to what such a loop needs, so its time to first step is a fair floor.

`--nproc N` (N > 1) is nanoGPT's data-parallel loop: N processes started the way torchrun would (fresh
interpreters, a launcher that imports no torch), gloo, plain `DistributedDataParallel` with its default settings,
each rank drawing its own micro-batches; tokens/s counts every rank's tokens, peak RSS is the largest rank's.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # as early as this script can observe; interpreter start-up is measured outside

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a prepared dataset folder (train.bin + meta.json)")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=192)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=16, help="micro-batch = global batch (no accumulation)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "bf16-true"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--nproc", type=int, default=1, help="data-parallel processes (gloo DDP when > 1)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    a = parse(argv)
    if a.nproc <= 1:
        return train(a)
    import multiprocessing
    import socket

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    results = ctx.SimpleQueue()
    procs = [ctx.Process(target=_rank, args=(a, rank, port, results)) for rank in range(a.nproc)]
    for proc in procs:
        proc.start()
    got = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    if any(proc.exitcode != 0 for proc in procs) or any("error" in r for r in got):
        raise SystemExit(f"plain DDP loop failed: {[r.get('error') for r in got]}")
    result = next(r for r in got if r["rank"] == 0)
    result["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in got)  # per rank: the largest
    return result


def _rank(a: argparse.Namespace, rank: int, port: int, results) -> None:
    try:
        results.put(train(a, rank, port))
    except BaseException as e:  # the launcher must hear of it, or it waits for this rank's result forever
        results.put({"rank": rank, "error": f"{type(e).__name__}: {e}"})
        raise


def train(a: argparse.Namespace, rank: int = 0, port: int = 0) -> dict:
    import resource

    import numpy as np
    import torch

    from bigtrain.model import GPT, GPTConfig

    world = max(a.nproc, 1)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    device = torch.device(a.device)
    meta = json.loads(open(os.path.join(a.data, "meta.json")).read())
    tokens = np.memmap(os.path.join(a.data, "train.bin"), dtype=meta["dtype"], mode="r")
    span = np.arange(a.block_size + 1)
    rng = np.random.default_rng(a.seed + rank)  # each rank its own micro-batches

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        starts = rng.integers(0, len(tokens) - a.block_size - 1, size=a.batch, endpoint=True)
        w = torch.from_numpy(tokens[starts[:, None] + span].astype(np.int64))
        return w[:, :-1].to(device, non_blocking=True), w[:, 1:].to(device, non_blocking=True)

    config = GPTConfig(a.n_layer, a.n_head, a.n_embd, a.block_size, a.vocab_size)
    model = GPT(config).to(device)
    if a.precision == "bf16-true":
        model = model.to(torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": a.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(
        groups, lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=fused or None, foreach=None if fused else True
    )

    def lr_at(step: int) -> float:
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        progress = min((step - a.warmup) / max(a.steps - a.warmup, 1), 1.0)
        return a.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (a.lr - a.min_lr)

    step_model = torch.compile(model) if a.compile else model
    if world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(step_model)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.precision == "bf16-mixed")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: list[float] = []
    first_step_s = first_step_unix = None
    model.train()
    last = time.perf_counter()
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = batch()
        with autocast:
            _, loss = step_model(x, y)
        loss.backward()
        if a.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_value = loss.item()  # bigtrain's progress bar reads the loss every step as well
        sync()
        now = time.perf_counter()
        times.append(now - last)
        last = now
        if first_step_s is None:
            first_step_s = now - _STARTED
            first_step_unix = time.time()
    steady = times[1:] or times
    tokens_per_step = a.batch * a.block_size * world
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "rank": rank,
        "world_size": world,
        "first_step_s": first_step_s,
        "first_step_unix": first_step_unix,  # wall clock, for time to first step from the launcher's spawn
        "peak_rss_bytes": rss if sys.platform == "darwin" else rss * 1024,  # as bigtrain's summary measures it
        "tokens_per_s": tokens_per_step * len(steady) / sum(steady),
        "step_times_s": times,
        "final_loss": loss_value,
        "threads": torch.get_num_threads(),
        "n_params": model.num_params(),
    }
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
