"""The domain of every value a user can set, in one table, checked before any cross-group rule.

`DOMAINS` gives each numeric field of the schema (bigtrain/config/schema.py) its range: finite, sign, bounds. Upper
bounds are generous (a 175B model is far inside them) but finite, so no later rule or planner loop meets 10**12 or
inf. A test holds the table to the schema: a numeric field without a domain fails it. `TEXT` says which strings may
not be empty, `NAMES` which ones must be plain names, `CHOICES` the few strings with a fixed set of values that no
other rule checks.

`domain_problems(cfg)` also refuses what composition lets through: keys outside the schema (`+trainer.max_step=5`;
only `notes` is free-form) and interpolations that do not resolve. `validate()` runs it first and stops there: the
cross-group rules assume every value is inside its domain.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

# Lightning's seed_everything takes seeds in numpy's range.
MAX_SEED = 2**32 - 1
BIG = 2**40  # counts (steps, tokens, bucket elements): finite, far above any real run


@dataclass(frozen=True)
class Domain:
    """A closed or half-open interval of finite numbers; None (when the schema allows it) always passes."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value instead of low <= value
    high_open: bool = False

    def holds(self, value) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def requirement(self, value) -> str:
        """What `value` breaks, in the words validation errors have always used ("a positive number", ">= 0")."""
        finite = "" if math.isfinite(value) else "a finite number "
        below = (
            self.low is not None and math.isfinite(value) and (value <= self.low if self.low_open else value < self.low)
        )
        if below and (self.low, self.low_open) in ((0, True), (1, False)):
            return "a positive number"
        if below and (self.low, self.low_open) == (0, False):
            return ">= 0"
        return f"{finite}in {self}"

    def __str__(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open or self.low is None else '['}{lo}, {hi}{')' if self.high_open or self.high is None else ']'}"


def count(low: int = 1, high: int = BIG) -> Domain:
    return Domain(low, high)


POSITIVE = Domain(0, 1e9, low_open=True)  # finite and > 0 (rates, sizes in GiB, TFLOP/s, GB/s)
NON_NEGATIVE = Domain(0, 1e9)
FRACTION_OPEN = Domain(0, 1, low_open=True, high_open=True)  # (0, 1)
PROBABILITY = Domain(0, 1, high_open=True)  # [0, 1)
SEED = count(0, MAX_SEED)

DOMAINS: dict[str, Domain] = {
    "model.n_layer": count(1, 4096),
    "model.n_head": count(1, 4096),
    "model.n_embd": count(1, 2**17),
    "model.head_dim": count(1, 2**14),
    "model.block_size": count(1, 2**20),
    "model.vocab_size": count(1, 2**24),
    "model.dropout": PROBABILITY,
    "model.published_n_params": count(1, 10**15),
    "model.norm_eps": Domain(0, 1, low_open=True),
    "model.ffn_hidden_size": count(1, 2**20),
    "model.ffn_multiple_of": count(1, 2**16),
    "model.ffn_dim_multiplier": Domain(0, 64, low_open=True),
    "model.rope_theta": Domain(0, 1e12, low_open=True),
    "model.n_params": Domain(0, 1e15, low_open=True),  # a size to pick a shape for (plan/sizing.py)
    "model.published_n_active_params": count(1, 10**15),
    "model.moe.n_experts": count(0, 4096),  # 0: dense
    "model.moe.top_k": count(1, 4096),
    "model.moe.capacity_factor": POSITIVE,
    "model.moe.eval_capacity_factor": POSITIVE,
    "model.moe.aux_loss_coef": NON_NEGATIVE,
    "model.moe.z_loss_coef": NON_NEGATIVE,
    "model.moe.every_n_layers": count(1, 4096),
    "model.moe.n_shared_experts": count(0, 4096),
    "model.n_kv_head": count(1, 4096),
    "parallelism.tp": count(1, 2**16),
    "parallelism.pp": count(1, 2**12),
    "parallelism.virtual_stages": count(1, 2**10),
    "parallelism.ep": count(1, 2**12),
    "zero.reduce_bucket_size": count(1),
    "zero.allgather_bucket_size": count(1),
    "zero.stage3_param_persistence_threshold": count(0),
    "hardware.devices": count(1, 2**12),
    "hardware.nodes": count(1, 2**20),
    "hardware.device_memory_gib": POSITIVE,
    # 0: the device lacks that precision (V100 has no bf16); the one the run uses must be positive, see below.
    "hardware.peak_tflops_bf16": NON_NEGATIVE,
    "hardware.peak_tflops_fp16": NON_NEGATIVE,
    "hardware.peak_tflops_fp32": NON_NEGATIVE,
    "hardware.host_memory_gib": POSITIVE,
    "hardware.intra_node_bandwidth_gbps": POSITIVE,
    "hardware.inter_node_bandwidth_gbps": POSITIVE,
    "hardware.price_per_device_hour": NON_NEGATIVE,
    "hardware.host_device_bandwidth_gbps": POSITIVE,
    "hardware.nvme_bandwidth_gbps": POSITIVE,
    "hardware.nvme_capacity_gib": NON_NEGATIVE,
    "hardware.pcie_node_bandwidth_gbps": POSITIVE,
    "hardware.intra_node_efficiency": Domain(0, 1, low_open=True),
    "hardware.inter_node_efficiency": Domain(0, 1, low_open=True),
    "hardware.host_cores": count(1, 2**16),
    "hardware.cpu_adam_elements_per_s_per_core": Domain(0, 1e12, low_open=True),
    "hardware.host_memory_bandwidth_gbps": POSITIVE,
    "hardware.cpus_per_device": count(1, 4096),
    "hardware.slurm_time_limit_min": count(1, 60 * 24 * 366),
    # Above the 256 byte-level tokens (+1 special), below the uint16 token files' limit.
    "data.bpe_vocab_size": count(258, 65536),
    "data.val_fraction": FRACTION_OPEN,
    "data.max_bytes": count(1),
    "data.num_workers": count(0, 1024),
    "optim.lr": Domain(0, None, low_open=True),  # any finite rate: a blow-up test uses 1e30 on purpose
    "optim.min_lr": NON_NEGATIVE,
    "optim.betas": PROBABILITY,  # each element
    "optim.eps": Domain(0, 1, low_open=True),
    "optim.weight_decay": NON_NEGATIVE,
    "optim.warmup_steps": count(0),
    "optim.grad_clip": NON_NEGATIVE,  # 0 disables clipping
    "trainer.max_steps": count(1),
    "trainer.val_check_interval": count(1),
    "trainer.val_batches": count(0),
    "trainer.global_batch_size": count(1, 2**24),
    "trainer.micro_batch_size": count(1, 2**24),
    "trainer.seed": SEED,
    "trainer.log_every_n_steps": count(1),
    "trainer.checkpoint_every_n_steps": count(0),  # 0: only at the end
    "trainer.keep_last": count(1, 10**6),
    "trainer.sample_tokens": count(0, 2**20),  # 0 skips the sample
    "generate.max_new_tokens": count(0, 2**24),
    "generate.temperature": Domain(0, 1e6),  # 0: greedy
    "generate.top_k": count(1, 2**24),
    "generate.top_p": Domain(0, 1, low_open=True),
    "generate.seed": SEED,
    "generate.num_samples": count(1, 2**16),
    "eval.max_tokens": count(1),
    "eval.batch_size": count(1, 2**20),
    "plan.mfu": Domain(0, 1, low_open=True),
    "plan.headroom": PROBABILITY,
    "plan.train_tokens": count(1, 10**18),
    "plan.max_nodes": count(1, 2**20),
    "plan.top": count(1, 10**6),
    "plan.achieved_tflops": Domain(0, 1e6, low_open=True),  # end-to-end per device
    "plan.additional_buffer_factor": Domain(1, 100),  # DeepSpeed's estimators' factor, >= 1
    "plan.process_baseline_gib": Domain(0, 1e4),  # GiB; 0: no baseline
    "distill.alpha": Domain(0, 1),
    "distill.temperature": Domain(0, 1e3, low_open=True),
    "quantize.eval_tokens": count(0),  # 0 skips the before/after comparison
}
# A distillation teacher's shape (planned from the config): the same domains as the student's.
DOMAINS.update({f"distill.teacher_{k}": d for k, d in DOMAINS.items() if k.startswith("model.")})

# Strings that must not be empty: '' as a path means the working directory, which is never what was meant.
TEXT = ("data.source", "data.cache_dir", "data.name", "logger.project", "task")
# Strings that become a name somewhere else (a wandb project, a folder): no path separators or URL characters.
NAMES = {"logger.project": "/\\#?%:"}
# Strings whose valid values no other rule checks.
CHOICES = {"parallelism.process_group_backend": (None, "gloo", "nccl", "mpi"), "zero.stage": (0, 1, 2, 3)}
# The one free-form section: its keys are the user's own.
FREE_FORM = ("notes",)


def _get(tree: dict, key: str):
    """A dotted key of the resolved plain config (None when absent)."""
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _numeric_problems(tree: dict) -> list[str]:
    p = []
    for key, domain in DOMAINS.items():
        value = _get(tree, key)
        values = list(value) if isinstance(value, list) else [value]
        for v in values:
            if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue  # None where the schema allows it; types are the schema's job
            if not domain.holds(v):
                each = "each element " if len(values) > 1 else ""
                p.append(f"{key}={value}{': ' if each else ' '}{each}must be {domain.requirement(v)}")
                break
    return p


def _text_problems(tree: dict) -> list[str]:
    p = []
    for key in TEXT:
        value = _get(tree, key)
        if value is not None and not str(value).strip():
            p.append(f"{key}='{value}' is empty; give a value (see `python -m bigtrain --cfg job` for the default)")
    for key, bad in NAMES.items():
        value = str(_get(tree, key) or "")
        if any(c in bad for c in value) or len(value) > 128:
            p.append(f"{key}={value} must be a plain name of at most 128 characters, without any of {' '.join(bad)}")
    for key, valid in CHOICES.items():
        value = _get(tree, key)
        if value not in valid or isinstance(value, bool):
            p.append(f"{key}={value} is unknown; valid: {', '.join(str(v).replace('None', 'null') for v in valid)}")
    tr, hw = tree["trainer"], tree["hardware"]
    precision = str(tr["precision"])
    kind = "bf16" if precision.startswith("bf16") else "fp16" if precision.startswith("16") else "fp32"
    peak = hw[f"peak_tflops_{kind}"]
    if isinstance(peak, (int, float)) and math.isfinite(peak) and peak <= 0:
        p.append(
            f"hardware.peak_tflops_{kind}={peak}: {hw['name']} has no {kind} throughput, but "
            f"trainer.precision={precision} runs in {kind}; choose another precision or set hardware.peak_tflops_{kind}"
        )
    if tr["sample_tokens"] > 0 and not str(tr["sample_prompt"]):
        p.append(
            "trainer.sample_prompt='' is empty: the sample needs at least one character; or trainer.sample_tokens=0"
        )
    if tree["task"] == "generate" and tree["prompt"] is not None and not str(tree["prompt"]):
        p.append("prompt='' is empty: give at least one character, or prompt_file=PATH")
    return p


def unknown_keys(cfg, schema=None, path: str = "") -> list[str]:
    """Dotted keys of cfg that the schema does not declare (outside the free-form sections)."""
    from bigtrain.config.schema import BigtrainConfig

    schema = BigtrainConfig if schema is None else schema
    declared = {f.name: f for f in dataclasses.fields(schema)}
    found = []
    for key in cfg.keys() if isinstance(cfg, DictConfig) else []:
        where = f"{path}{key}"
        if key not in declared:
            found.append(where)
            continue
        sub = _dataclass_of(declared[key].type)
        if sub is not None and where not in FREE_FORM:
            node = cfg._get_node(key)
            if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
                found += unknown_keys(node, sub, f"{where}.")
    return found


def _dataclass_of(annotation):
    """The dataclass a field holds, from its (string, with postponed annotations) type."""
    from bigtrain.config import schema as schema_module

    if isinstance(annotation, str):
        annotation = getattr(schema_module, annotation.split(" |")[0].strip(), None)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), None)
    return annotation if dataclasses.is_dataclass(annotation) else None


def resolved(cfg) -> dict | str:
    """The config with every interpolation resolved, as plain containers; or, when one does not resolve
    (`${nope}`, `${oc.env:UNSET}`, a string in an int field), the failure as one phrase."""
    from bigtrain.config.compose import one_line

    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception as e:  # OmegaConf raises several types (InterpolationKeyError, ValidationError, ...)
        return f"a value does not resolve: {one_line(e)}"


def domain_problems(cfg) -> list[str]:
    """Unknown keys, unresolvable interpolations, and values outside their domain, as phrases."""
    tree = resolved(cfg)
    if isinstance(tree, str):
        return [tree]
    extra = unknown_keys(cfg)
    if extra:
        return [
            f"unknown key{'s' if len(extra) > 1 else ''} {', '.join(extra)}: not in bigtrain's schema (check the "
            f"spelling with `python -m bigtrain --cfg job`); free-form values go under notes, e.g. +notes.x=1"
        ]
    from bigtrain.config.launch_checks import data_cache_problems

    p = _numeric_problems(tree) + _text_problems(tree)
    return p or data_cache_problems(cfg)
