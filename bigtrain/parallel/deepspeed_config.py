"""The DeepSpeed config dict for a composed bigtrain config: ZeRO stage, offload, buckets, batch sizes.

Keys are DeepSpeed's own (https://www.deepspeed.ai/docs/config-json/). Lightning fills in what it owns itself:
`gradient_accumulation_steps` (from Trainer.accumulate_grad_batches), `gradient_clipping` (from
Trainer.gradient_clip_val) and the bf16 / fp16 sections (from Trainer.precision).
"""

from __future__ import annotations

from bigtrain.model.shapes import attn_width


def offload_devices(cfg) -> tuple[str, str]:
    """(optimizer device, parameter device) for cfg.offload, each none | cpu | nvme."""
    return cfg.offload.optimizer, cfg.offload.params


def largest_param_numel(model_cfg) -> int:
    """Elements in the GPT's largest single tensor: NVMe parameter buffers must each hold one whole parameter."""
    m = model_cfg
    attn = attn_width(m.n_embd, m.n_head, m.head_dim)
    return max(m.vocab_size * m.n_embd, m.block_size * m.n_embd, 4 * m.n_embd * m.n_embd, 3 * attn * m.n_embd)


def deepspeed_config(cfg) -> dict:
    z, o = cfg.zero, cfg.offload
    zero: dict = {
        "stage": z.stage,
        "reduce_bucket_size": z.reduce_bucket_size,
        "allgather_bucket_size": z.allgather_bucket_size,
        "overlap_comm": z.overlap_comm,
        "contiguous_gradients": z.contiguous_gradients,
    }
    if z.stage == 3:
        zero["stage3_param_persistence_threshold"] = z.stage3_param_persistence_threshold
        zero["stage3_prefetch_bucket_size"] = z.allgather_bucket_size
    opt_device, param_device = offload_devices(cfg)
    nvme_path = o.nvme_path if "nvme" in (opt_device, param_device) else None
    if opt_device != "none":
        zero["offload_optimizer"] = {"device": opt_device, "pin_memory": o.pin_memory}
        if opt_device == "nvme":
            zero["offload_optimizer"].update(nvme_path=nvme_path, buffer_count=4)
    if param_device != "none":
        zero["offload_param"] = {"device": param_device, "pin_memory": o.pin_memory}
        if param_device == "nvme":
            # No prefetching of swapped parameters: DeepSpeed 0.19's NVMe prefetch can claim a swap buffer twice
            # ("param N already assigned swap buffer id M") when the module is traced in a new order, e.g. an
            # evaluation outside the training loop.
            zero["stage3_prefetch_bucket_size"] = 0
            zero["offload_param"].update(
                nvme_path=nvme_path, buffer_count=5, buffer_size=largest_param_numel(cfg.model), max_in_cpu=0
            )
    config: dict = {
        "train_micro_batch_size_per_gpu": cfg.trainer.micro_batch_size,
        "zero_optimization": zero,
        # bigtrain's optimizer is torch's AdamW (or DeepSpeedCPUAdam when offloading): both are fine under ZeRO.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # Lightning logs; keep DeepSpeed's own step prints quiet
        "wall_clock_breakdown": False,
    }
    if nvme_path:
        # Asynchronous I/O for ZeRO-Infinity's swapping (DeepSpeed's defaults, spelled out).
        config["aio"] = {
            "block_size": 1_048_576,
            "queue_depth": 8,
            "single_submit": False,
            "overlap_events": True,
            "thread_count": 1,
        }
    return config
