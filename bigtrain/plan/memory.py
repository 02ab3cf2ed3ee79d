"""Memory per device (and per node on the host / NVMe) for one training layout.

Model states follow the ZeRO paper (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models", section 3.1 and Figure 1): mixed-precision Adam holds 2 bytes of 16-bit parameters, 2 of
16-bit gradients and K = 12 of fp32 optimizer states (master weights, momentum, variance) per parameter; stage 1
partitions the K term over the Nd data-parallel ranks, stage 2 also the gradients, stage 3 also the parameters.
Tensor and pipeline parallelism first split every state over tp x pp (Megatron-LM). A plan for a ZeRO engine
(zero >= 1) reports DeepSpeed's real layout instead (`deepspeed_states`: its fp32 gradient partition, stage 1
bucketed like stage 2, ZeRO-3's persistent small tensors); `model_states(..., accounting="paper")` keeps the
published formulas, which tests/test_plan_published.py holds to the paper's worked example.

Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
section 4 and Table 2): s*b*h*(34 + 5*a*s/h) bytes per layer for 16-bit activations, with its tensor-parallel,
sequence-parallel, selective-recompute and full-recompute variants; `layer_activation_terms` re-derives the 34 for
grouped-query attention and SwiGLU (its docstring has the derivation). With the 1F1B pipeline schedule the first
stage keeps pp micro-batches of its n_layer/pp layers in flight, i.e. n_layer layers' worth whatever pp is.

Offload follows DeepSpeed (ZeRO-Offload, Ren et al. 2021; ZeRO-Infinity, Rajbhandari et al. 2021): offloading the
optimizer moves the fp32 states and the fp32 gradient partition the CPU Adam steps on; offloading parameters
(stage 3 only) moves the 16-bit parameter partition too.
"""

from __future__ import annotations

from bigtrain.plan import estimator, process, schedule
from bigtrain.plan.params import largest_module_params, persistent_params
from bigtrain.plan.setup import Setup

# plan.accounting: how model states are counted (config/validate.py holds the same names for its error line).
ACCOUNTINGS = ("engine", "paper", "deepspeed-estimator")

# How each number is computed, keyed as in `memory_per_device_bytes`; printed in the table and the JSON.
FORMULAS = {
    "accounting": "plan.accounting: engine = the partitions DeepSpeed/torch hold, resident at the optimizer step "
    "(tests/test_plan_measured.py, tests/zero1_grads_probe.py); paper = ZeRO "
    "paper sec. 5: 4P + 12P/Nd | 2P + 14P/Nd | 16P/Nd at stages 1 | 2 | 3; deepspeed-estimator = " + estimator.FORMULA,
    "params": "ZeRO: P_bytes x N/(tp*pp) [/dp at zero 3; 0 when offloaded]",
    "grads": "ZeRO: G_bytes x N/(tp*pp) [/dp at zero >= 2]; DeepSpeed (engine): 16-bit partition /dp at zero 1-3, "
    "resident at the optimizer step (zero 1 with accumulation peaks at whole 16-bit grads before the boundary: "
    "buffers)",
    "optimizer": "ZeRO: K x N/(tp*pp) [/dp at zero >= 1], K=12 mixed, 8 fp32 Adam; DeepSpeed 1-2: (K=12 + 4 fp32 grad)/dp",
    "activations": "Korthikanti 2022: L x s*b*h*(34 + 5as/h) [tp/sp/selective/full variants] + output layer; "
    "34 re-derived for GQA k/v and SwiGLU",
    "kv_cache": "generation: 2 x L x n_kv_head x head_dim x block_size x 2 bytes per sequence (/tp)",
    "buffers": "DDP bucket copy of grads | DeepSpeed reduce buckets (zero 1-2: reduce_bucket_size x 2 with overlap_comm, "
    "whole on GPU, touched pages on CPU) + allgather bucket | zero 3: (P+G bytes) x largest module | zero 1 with "
    "accumulation: whole .grad before the boundary (P_bytes x N/(tp*pp), measured)",
    "teacher": "distill: P_bytes x N_teacher (whole on every rank) + one teacher layer's forward + logits, KD fp32 (b s V) x4",
    "host": "offload: 16 x N/(tp*pp*dp) per rank (fp32 master, moments, grads; + P_bytes x that for params) x ranks/node",
    "host_deepspeed_estimator": "DeepSpeed's estimator CPU column per node (fp32 states when offloaded, the fp32 model "
    "each process builds unless zero_init) x additional_buffer_factor",
    "nvme": "as host, for the states offloaded to NVMe (per node)",
    "activations_in_flight": "kept activations x schedule's in-flight factor (1F1B 1, interleaved 1 + (pp-1)/(pp v), "
    "GPipe m/pp) + working set; plan.activation_offload: 2 layers kept, the rest on the host (x ranks per node)",
    **process.FORMULAS,
}


def state_bytes(s: Setup) -> tuple[int, int, int]:
    """Bytes per parameter of (parameters, gradients, optimizer states) for the precision and engine.

    A ZeRO engine in mixed precision keeps 16-bit weights and gradients plus K=12 bytes of fp32 master weights
    and Adam moments (ZeRO paper). Torch AMP (single / DDP, `*-mixed`) instead keeps fp32 weights and gradients
    and 8 bytes of fp32 moments: the same 16 bytes, split differently. Pure precisions hold Adam's two moments in
    the parameters' own dtype (torch.optim.AdamW)."""
    p = s.precision
    if p.endswith("-mixed"):
        return (2, 2, 12) if s.sharded else (4, 4, 8)
    if p.startswith("64"):
        return (8, 8, 16)
    if p in ("bf16-true", "16-true"):
        return (2, 2, 4)
    return (4, 4, 8)  # 32-true / 32


def activation_bytes_per_element(s: Setup) -> int:
    p = s.precision
    return 8 if p.startswith("64") else 4 if p in ("32", "32-true") else 2


def model_states(s: Setup, n: int, accounting: str | None = None) -> dict[str, float]:
    """Per-device bytes of parameters, gradients and optimizer states (device side only), in the accounting asked
    for (default: the Setup's `plan.accounting`):
    - "engine": what the engine allocates: the paper's layout for torch DDP / single device, DeepSpeed's real
      layout for a ZeRO engine (`deepspeed_states`);
    - "paper": the ZeRO paper's formulas as published (`paper_states`);
    - "deepspeed-estimator": DeepSpeed's estimate_zero2/3_model_states_mem_needs (bigtrain/plan/estimator.py)."""
    accounting = accounting or s.accounting
    if s.layout.ep > 1 and s.n_experts:
        # Expert parallelism: the dense parameters as the engine holds them over all dp ranks, the routed experts
        # split over ep and partitioned over their dp / ep replicas (bigtrain/plan/moe.py).
        from bigtrain.plan.moe import expert_params, expert_states_per_rank

        dense = _model_states(s, n - expert_params(s), accounting)
        experts = expert_states_per_rank(s, state_bytes(s))
        return {k: dense[k] + experts[k] for k in dense}
    return _model_states(s, n, accounting)


def _model_states(s: Setup, n: int, accounting: str) -> dict[str, float]:
    if not estimator.applies(s) or accounting == "paper":
        return paper_states(s, n)  # without a ZeRO engine the paper's layout is torch's own
    if accounting == "deepspeed-estimator":
        return estimator.estimator_states(s, n, gather_buffer(s))
    return deepspeed_states(s, n)


def paper_states(s: Setup, n: int) -> dict[str, float]:
    """The ZeRO paper (Rajbhandari et al. 2020, section 5 and Figure 1) per device, with Psi = N/(tp*pp) and
    mixed-precision Adam's 2 + 2 + K (K = 12): stage 0 (2 + 2 + K) Psi, stage 1 4 Psi + K Psi/Nd, stage 2
    2 Psi + (2 + K) Psi/Nd, stage 3 (2 + 2 + K) Psi/Nd; other precisions put their own bytes in the same places
    (`state_bytes`). Offloaded states leave the device (ZeRO-Offload)."""
    pb, gb, ob = state_bytes(s)
    shard = n / (s.tp * s.pp)  # parameters this model-parallel rank owns before data-parallel partitioning
    dp, z = s.dp, s.zero
    params = pb * shard / (dp if z >= 3 else 1)
    grads = gb * shard / (dp if z >= 2 else 1)
    optimizer = ob * shard / (dp if z >= 1 else 1)
    if s.offload_optimizer != "none":
        optimizer = 0.0
        if z >= 2:
            grads = 0.0  # reduced through the buckets straight into the host's fp32 gradient partition
    if s.offload_params != "none":
        params = 0.0  # fetched per layer into the gather buffer (see buffers)
    return {"params": params, "grads": grads, "optimizer": optimizer}


def model_state_totals(s: Setup, n: int) -> dict[str, float]:
    """Device model-state bytes (params + grads + optimizer) under every accounting, for the plan's JSON."""
    return {a: sum(model_states(s, n, a).values()) for a in ACCOUNTINGS}


def deepspeed_states(s: Setup, n: int) -> dict[str, float]:
    """DeepSpeed's ZeRO stages 1-3 as its engine allocates them (checked against the real partitions of a
    2-process CPU run in tests/test_plan_measured.py, and against DeepSpeed's own estimators):
    - stages 1 and 2 share one implementation (stage_1_and_2.py) that reduces gradients through buckets into
      each rank's partition during the backward pass, so stage 1 keeps no full gradient copy either; per partition
      it keeps an fp32 master copy, an fp32 gradient and Adam's two moments: 16 bytes/param over Nd (the paper's
      K = 12 plus a 4-byte fp32 gradient), even in fp32 training, and in mixed precision a 16-bit gradient
      partition (2 bytes over Nd): 2 + 18/Nd, DeepSpeed's estimate_zero2_model_states_mem_needs exactly;
    - stage 3 keeps the 16-bit parameter and gradient partitions and the K = 12 fp32 states (the paper's 16/Nd),
      plus a whole copy of every tensor below stage3_param_persistence_threshold (biases, LayerNorms);
    - offloading the optimizer moves the fp32 states to the host, and the gradient partition with them."""
    pb, gb, _ = state_bytes(s)
    partition = n / (s.tp * s.pp * s.dp)
    shard = n / (s.tp * s.pp)
    if s.zero >= 3:
        persistent = persistent_params(s, s.persistence_threshold) / s.tp
        params = pb * (partition + persistent)
        grads = gb * partition
        optimizer = 12 * partition
    else:
        params = pb * shard
        grads = gb * partition if gb != 4 else 0.0  # in fp32 the fp32 gradient partition is the only one
        optimizer = 16 * partition
    if s.offload_optimizer != "none":
        optimizer = grads = 0.0
    if s.offload_params != "none":
        params = pb * persistent_params(s, s.persistence_threshold) / s.tp if s.zero >= 3 else 0.0
    return {"params": params, "grads": grads, "optimizer": optimizer}


# Terms of `layer_activation_terms` that tensor parallelism leaves whole on every rank (the inputs of the column-
# parallel layers, the norms' inputs, the dropout masks after the row-parallel ones); sequence parallelism shards them.
REPLICATED_TERMS = ("norm_inputs", "attn_input", "mlp_input", "dropout_masks")


def layer_activation_terms(s: Setup) -> dict[str, float]:
    """Bytes one layer keeps for its backward pass at 16-bit activations (no parallelism, no recomputation), by term.

    Korthikanti et al. 2022, section 4.1, count per layer 11sbh + 5as^2b for attention, 19sbh for the MLP and 4sbh
    for the two LayerNorms: 34sbh + 5as^2b. Each term is a tensor some backward needs, 2 bytes per element (1 for
    dropout masks). Re-derived with the query width d_q = n_head x head_dim, the key/value width d_kv = n_kv_head x
    head_dim and the MLP width f:
      norm_inputs    2 x 2sbh    each norm's input (LayerNorm and RMSNorm alike: the statistics are recomputed)
      attn_input     2sbh        input of the q/k/v projection
      q              2sb d_q     queries for QK^T (after the rotary rotation, which needs only its constants)
      kv             4sb d_kv    keys for QK^T and values for (scores x V): grouped-query attention keeps n_kv_head
                                 heads, so this term scales with n_kv_head (a GQA-aware kernel, such as SDPA's
                                 enable_gqa, never materialises the repeated heads)
      scores         5as^2b      softmax output (2), its dropout mask (1) and dropout output (2); a = n_head query
                                 heads, each scoring its own s x s
      proj_input     2sb d_q     input of the output projection
      dropout_masks  2 x sbh     after attention and after the MLP
      mlp_input      2sbh        input of the first MLP matrices (SwiGLU's gate and up read the same tensor)
      mlp_hidden     GELU: 4sbf  GELU input (its backward) and output (the down projection's input);
                     SwiGLU: 8sbf  gate output (SiLU's backward), up output and SiLU output (the product's backward)
                                 and the product (the down projection's input)
    GPT (d_q = d_kv = h, f = 4h, GELU): 4 + 2 + 2 + 4 + 2 + 2 + 2 + 16 = 34 sbh, of which the REPLICATED_TERMS are
    Korthikanti's 10sbh and the rest the 24sbh that tensor parallelism divides. SwiGLU at Llama's f = 8h/3 keeps
    21.3sbh in its hidden terms instead of GELU's 16sbh; GQA with n_kv_head = n_head / 8 keeps 0.5sbh of k and v
    instead of 4sbh."""
    sq, b, h = s.block_size, s.micro_batch_size, s.n_embd
    sb, d_q, d_kv = sq * b, s.n_head * s.head_dim, s.kv_heads * s.head_dim
    return {
        "norm_inputs": 4 * sb * h,
        "attn_input": 2 * sb * h,
        "q": 2 * sb * d_q,
        "kv": 4 * sb * d_kv,
        "scores": 5 * s.n_head * sq * sq * b,
        "proj_input": 2 * sb * d_q,
        "dropout_masks": 2 * sb * h,
        "mlp_input": 2 * sb * h,
        "mlp_hidden": (8 if s.mlp == "swiglu" else 4) * sb * s.ffn,
    }


def activations(s: Setup) -> float:
    """Korthikanti et al. 2022, per device, scaled from their 2-byte activations to the training precision: the
    kept activations of the micro-batches in flight (schedule.in_flight_factor; two layers' worth when offloaded to
    the host, schedule.offload_resident) plus the working set."""
    kept, working = activation_parts(s)
    kept_device = schedule.offload_resident(s, kept) if s.activation_offload else kept * schedule.in_flight_factor(s)
    return kept_device + working


def offloaded_activations(s: Setup) -> float:
    """Host bytes per device under plan.activation_offload: what the device would keep in flight (0 without)."""
    if not s.activation_offload:
        return 0.0
    kept, _ = activation_parts(s)
    return kept * schedule.in_flight_factor(s)


def activation_parts(s: Setup) -> tuple[float, float]:
    """(kept, working) activation bytes per device: kept = what n_layer layers keep for their backward pass for one
    micro-batch (1F1B's first stage: pp micro-batches of n_layer/pp layers), working = one layer being recomputed
    (full recomputation) plus Korthikanti eq. 5's embedding and output-layer terms."""
    sq, b, h, t, L = s.block_size, s.micro_batch_size, s.n_embd, s.tp, s.n_layer
    sbh = sq * b * h
    sp = s.sequence_parallel and t > 1
    terms = layer_activation_terms(s)
    replicated = sum(terms[k] for k in REPLICATED_TERMS)  # Korthikanti's 10sbh
    sharded = sum(v for k, v in terms.items() if k not in REPLICATED_TERMS and k != "scores")  # their 24sbh
    scores = terms["scores"]  # 5as^2b: what selective recomputation drops
    working = 0.0
    if s.recompute == "full":
        # Only each layer's input is kept (2sbh, /t with sequence parallelism), plus one layer being recomputed.
        kept = L * 2 * sbh / (t if sp else 1)
        working = (replicated + sharded + scores) / t if sp else replicated + (sharded + scores) / t
    elif s.recompute == "selective":
        per_layer = (replicated + sharded) / t if sp else replicated + sharded / t
        kept = L * per_layer
    else:
        per_layer = (replicated + sharded + scores) / t if sp else replicated + (sharded + scores) / t
        kept = L * per_layer
    # Korthikanti eq. 5's extras: embedding dropout mask (first stage holds pp micro-batches) and, on the last stage,
    # the final LayerNorm, output layer and fp32 cross-entropy over the vocabulary: 4sbh/t (1 + v/h).
    working += sbh * s.pp / t
    if s.pp == 1:
        working += 4 * sbh / t * (1 + s.vocab_size / h)
    scale = activation_bytes_per_element(s) / 2
    return kept * scale, working * scale


def backward_transient(s: Setup) -> float:
    """The gradients of one layer's activations, alive while that layer's backward runs beside everything saved
    for the layers before it: at most one layer's saved activations (Korthikanti's per-layer count, no
    recomputation, split by tp as the activations are). Not in the device total (the activations row counts what is
    saved); in the peak a run measures (bigtrain/plan/process.py)."""
    t = s.tp
    sp = s.sequence_parallel and t > 1
    terms = layer_activation_terms(s)
    replicated = sum(terms[k] for k in REPLICATED_TERMS)
    rest = sum(v for k, v in terms.items() if k not in REPLICATED_TERMS)
    per_layer = (replicated + rest) / t if sp else replicated + rest / t
    return per_layer * activation_bytes_per_element(s) / 2


def kv_cache_bytes(s: Setup, batch: int = 1, length: int | None = None, bytes_per_element: int = 2) -> float:
    """Generation's KV cache: keys and values of n_kv_head heads for every layer and cached position,
    2 x n_layer x n_kv_head x head_dim x length x batch elements (16-bit by default), on one device (tp divides
    the heads)."""
    length = s.block_size if length is None else length
    return 2 * s.n_layer * s.kv_heads * s.head_dim * length * batch * bytes_per_element / s.tp


def gather_buffer(s: Setup) -> float:
    """ZeRO-3 only: the largest module's gathered 16-bit parameters and gradients, DeepSpeed's estimator term
    `4 * largest_layer_params` (estimate_zero3_model_states_mem_needs)."""
    if not s.sharded or s.zero < 3:
        return 0.0
    pb, gb, _ = state_bytes(s)
    return (pb + gb) * largest_module_params(s) / s.tp


def buffers(s: Setup, n: int) -> float:
    """Working buffers the engine allocates besides model states and activations."""
    _, gb, _ = state_bytes(s)
    shard = n / (s.tp * s.pp)
    if not s.sharded:
        # torch DDP copies every gradient into its flat all-reduce buckets (gradient_as_bucket_view=False).
        return gb * shard if s.world > 1 else 0.0
    # DeepSpeed's communication buckets (zero.reduce_bucket_size and zero.allgather_bucket_size elements).
    buckets = gb * (reduction_buckets(s, shard) + min(s.allgather_bucket_size, shard))
    return buckets + gather_buffer(s) + accumulation_grads(s, n)


def reduction_buckets(s: Setup, shard: float) -> float:
    """Elements of DeepSpeed's gradient reduction buckets. Stages 1-2 with contiguous_gradients allocate them whole
    at the first backward (stage_1_and_2.py setup_buckets: reduce_bucket_size elements, a second one with
    overlap_comm for double buffering), whatever the model's size: on a GPU all of it is allocated (measured:
    2 x 5e8 bf16 elements under DeepSpeed's defaults, tests/zero1_grads_probe.py); on CPU only the pages the
    gradients are written into become resident, at most the shard. Stage 3 and non-contiguous reduction: one bucket's
    worth of the shard."""
    count = 2 if s.overlap_comm else 1
    if s.zero in (1, 2) and s.contiguous_gradients:
        if s.process is not None and s.process.accelerator == "cpu":
            return min(count * s.reduce_bucket_size, shard)
        return count * s.reduce_bucket_size
    return min(s.reduce_bucket_size, shard)


def accumulation_grads(s: Setup, n: int) -> float:
    """ZeRO-1 with gradient accumulation: on the micro-batches before the accumulation boundary DeepSpeed reduces
    nothing, so every parameter's whole .grad (the parameters' dtype) is alive at the end of their backward passes;
    only the boundary's backward reduces them into the rank's partition and frees them (stage_1_and_2.py
    reduce_ready_partitions_and_remove_grads; measured by tests/zero1_grads_probe.py: 2P bytes in bf16 before the
    boundary, the 2P/Nd partition after it). Stage 2 reduces on every micro-batch."""
    if not (s.sharded and s.zero == 1 and s.accumulate > 1):
        return 0.0
    pb, _, _ = state_bytes(s)
    return pb * n / (s.tp * s.pp)


def offloaded(s: Setup, n: int) -> tuple[float, float]:
    """(host bytes, NVMe bytes) per node for the offloaded states of the ranks on that node."""
    pb, _, ob = state_bytes(s)
    partition = n / (s.tp * s.pp * s.dp)
    ranks_per_node = min(s.devices, s.world)
    host = nvme = 0.0
    if s.offload_optimizer != "none":
        # fp32 master copy, Adam moments and fp32 gradient partition: 16 bytes under DeepSpeed in any precision.
        states = (16 if s.sharded else ob + 4) * partition * ranks_per_node
        if s.offload_optimizer == "nvme":
            nvme += states
        else:
            host += states
    if s.offload_params != "none":
        states = pb * partition * ranks_per_node
        if s.offload_params == "nvme":
            nvme += states
        else:
            host += states
    return host, nvme


def teacher(s: Setup) -> float:
    """task=distill: the frozen teacher's weights, whole on every rank and stored like the student's (no gradients,
    no optimizer states), plus its forward under no_grad (one layer's working set at a time; nothing is kept for a
    backward pass) and the (b, s, V) tensors of the loss: teacher logits, and the fp32 teacher logits, teacher and
    student log-probabilities of the KL term."""
    if s.teacher is None:
        return 0.0
    from bigtrain.plan.params import n_params

    t, sq, b = s.teacher, s.block_size, s.micro_batch_size  # the teacher reads the student's windows
    pb, _, _ = state_bytes(s)
    sbh = sq * b * t.n_embd
    one_layer = sbh * (34 + 5 * t.n_head * sq / t.n_embd) * activation_bytes_per_element(s) / 2
    logits = sq * b * t.vocab_size * (activation_bytes_per_element(s) + 3 * 4)
    return pb * n_params(t) + one_layer + logits


def memory(s: Setup, n: int) -> dict[str, float]:
    """Per-device bytes by term (params, grads, optimizer, activations, buffers, teacher, total), host and NVMe per
    node; model states in the Setup's accounting."""
    out = model_states(s, n)
    out["activations"] = activations(s)
    out["buffers"] = buffers(s, n)
    if s.teacher is not None:
        out["teacher"] = teacher(s)
    out["total"] = sum(out.values())
    out["host"], out["nvme"] = offloaded(s, n)
    if s.accounting == "deepspeed-estimator" and estimator.applies(s):
        out["host"] = estimator.estimate(s, n)["cpu"]  # DeepSpeed's CPU column: per node, load-time copy included
    out["host"] += offloaded_activations(s) * min(s.devices, s.world)  # plan.activation_offload, per node
    terms = process.process_terms(s.process)
    terms["backward_transient"] = backward_transient(s) if s.process is not None else 0.0
    out.update(terms)
    out["peak"] = out["total"] + sum(terms.values())
    out["host_per_node"] = host_per_node(s, n, out)
    return out


SUB_GROUP_SIZE = 1_000_000_000  # DeepSpeed's zero_optimization.sub_group_size default (elements)


def load_time_host(s: Setup, n: int) -> float:
    """The fp32 model each process of a node builds on the host before the engine moves it to its device
    (DeepSpeed's estimators: 4 bytes x params x GPUs per node), only its largest layer when built under
    deepspeed.zero.Init (ZeRO-3 with plan.zero_init). On CPU hardware the model never leaves the host: its weights
    are the device terms."""
    if s.process is not None and s.process.accelerator == "cpu":
        return 0.0
    ranks = min(s.devices, s.world)
    built = largest_module_params(s) if s.sharded and s.zero >= 3 and s.zero_init else n / (s.tp * s.pp)
    return 4 * built * ranks


def swap_buffers(s: Setup, n: int) -> float:
    """DeepSpeed's pinned host buffers for NVMe offload, per process (bigtrain/parallel/deepspeed_config.py sets the
    counts): offload_param buffer_count = 5 buffers of the largest parameter, 16-bit (AsyncPartitionedParameter-
    Swapper); offload_optimizer buffer_count = 4 fp32 buffers of the largest optimizer sub-group partition
    (PartitionedOptimizerSwapper's largest_numel; ZeRO-3 splits the fp32 partition into sub-groups of
    sub_group_size = 1e9 elements, DeepSpeed's default, which bigtrain keeps)."""
    pb, _, _ = state_bytes(s)
    total = 0.0
    if s.offload_params == "nvme":
        total += 5 * largest_module_params(s) / s.tp * pb
    if s.offload_optimizer == "nvme":
        total += 4 * 4 * min(SUB_GROUP_SIZE, n / (s.tp * s.pp * s.dp))
    return total


def host_per_node(s: Setup, n: int, mem: dict[str, float]) -> float:
    """Host bytes per node for any layout: each process's baseline, data pages and loader workers (on CPU hardware
    its device terms too: they live in the same memory), the host's model states (offloaded states, or under
    plan.accounting=deepspeed-estimator DeepSpeed's CPU column), the larger of those and the fp32 model the
    processes build while loading, and DeepSpeed's NVMe swap buffers."""
    ranks = min(s.devices, s.world)
    p = s.process
    per_process = process.host_baseline(p)
    if p is not None and p.accelerator == "cpu":
        per_process += mem["total"]
    states = mem["host"]
    if not (s.accounting == "deepspeed-estimator" and estimator.applies(s)):  # its CPU column holds the load term
        states = max(states, load_time_host(s, n))
    return ranks * (per_process + swap_buffers(s, n)) + states


def usable_device_bytes(s: Setup) -> float:
    return s.device_memory_bytes * (1 - s.headroom)


def fits(s: Setup, mem: dict[str, float]) -> bool:
    """Device total within memory less headroom, the host memory per node within the node's, the NVMe states within
    its capacity."""
    return (
        mem["total"] <= usable_device_bytes(s)
        and mem["host_per_node"] <= s.host_memory_bytes * (1 - s.headroom)
        and mem["nvme"] <= s.nvme_capacity_bytes * (1 - s.headroom)
    )
