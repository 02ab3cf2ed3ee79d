"""5. GPU (CUDA only): tokens/s and MFU for gpt2-124m and gpt2-1.5b in bf16 on one GPU, bigtrain against the plain
loop in the same run (alternating). Without CUDA it returns one 'skipped' row.

MFU = model FLOPs per token x tokens/s / the GPU's peak dense bf16 FLOP/s, with model FLOPs per token
6N + 12 * n_layer * block_size * n_embd (PaLM, appendix B: the attention score and value matmuls included,
recomputation not). Fused AdamW (bigtrain's default on GPU) and SDPA flash attention are on in both; pass
--compile through BIGTRAIN_BENCH_COMPILE=1 to torch.compile the plain loop and set trainer.compile for bigtrain.
"""

from __future__ import annotations

import os

from benchmarks.common import (
    TRAIN_ONLY,
    Context,
    Row,
    compose,
    median,
    plain_args,
    prepared_dir,
    ratio,
    run_bigtrain,
    run_plain,
)

# Peak dense bf16 FLOP/s by device name (vendor datasheets, without sparsity); else the hardware config's figure.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}
MODELS = {"gpt2-124m": (16, 30), "gpt2-1.5b": (8, 20)}  # micro = global batch, steps


def flops_per_token(cfg, n_params: int) -> float:
    m = cfg.model
    return 6.0 * n_params + 12.0 * m.n_layer * m.block_size * m.n_embd


def peak_flops(cfg) -> float:
    import torch

    name = torch.cuda.get_device_name(0)
    for key, flops in PEAK_BF16.items():
        if key in name:
            return flops
    return cfg.hardware.peak_tflops_bf16 * 1e12


def run(ctx: Context) -> list[Row]:
    import torch

    if not torch.cuda.is_available():
        return [Row("gpu", "tokens/s and MFU, gpt2-124m / gpt2-1.5b", note="skipped: no CUDA device on this machine")]
    compile_ = os.environ.get("BIGTRAIN_BENCH_COMPILE") == "1"
    data = prepared_dir(ctx)
    rows = []
    for model, (batch, steps) in MODELS.items():
        steps = 3 if ctx.quick else steps
        overrides = [
            f"model={model}",
            "hardware=h100-80g-x8",
            "hardware.devices=1",
            "trainer.precision=bf16-mixed",
            f"trainer.global_batch_size={batch}",
            f"trainer.micro_batch_size={batch}",
            f"trainer.max_steps={steps}",
            "trainer.progress=false",
            f"data.prepared_dir={data}",
            *TRAIN_ONLY,
            *(["trainer.compile=true"] if compile_ else []),
        ]
        cfg = compose(*overrides)
        plain_cmd = [*plain_args(cfg, data, steps), "--device=cuda", *(["--compile"] if compile_ else [])]
        bt, plain, n_params = [], [], None
        for _ in range(ctx.repeats):
            _, summary = run_bigtrain(overrides, ctx, f"gpu-{model}")
            bt.append(summary["tokens_per_s"])
            n_params = summary["n_params"]
            _, out = run_plain(plain_cmd, ctx)
            plain.append(out["tokens_per_s"])
        per_token, peak = flops_per_token(cfg, n_params), peak_flops(cfg)
        mfu_bt, mfu_plain = median(bt) * per_token / peak, median(plain) * per_token / peak
        device = torch.cuda.get_device_name(0)
        rows += [
            Row(
                "gpu",
                f"{model} bf16 tokens/s",
                median(bt),
                median(plain),
                "tok/s",
                ratio(median(bt), median(plain)),
                ">= 0.95",
                f"{device}, batch {batch}x{cfg.model.block_size}, {steps} steps" + (", compiled" if compile_ else ""),
                {"bigtrain": bt, "plain": plain},
            ),
            Row(
                "gpu",
                f"{model} bf16 MFU",
                mfu_bt,
                mfu_plain,
                "fraction",
                mfu_bt,
                ">= 0.4" if model == "gpt2-1.5b" and "H100" in device else "",
                f"ratio column = bigtrain's MFU; peak {peak / 1e12:.0f} TFLOP/s",
            ),
        ]
    return rows
