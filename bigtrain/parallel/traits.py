"""What differs per strategy, beside the builder (strategy.py), as data: the tasks ask these, never the name.

Torch-free, so the front doors can read them before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from bigtrain.config.layout import Layout


@dataclass(frozen=True)
class StrategyTraits:
    # A checkpoint is one file that rank zero writes (atomically, training/checkpointing.py: AtomicCheckpointIO),
    # or a folder every rank writes its part of, whole once rank zero marks it COMPLETE (sharded_checkpoints.py).
    sharded_checkpoint: bool
    # Rank zero can gather the whole fp32 model (parallel/gather.py: full_state_dict) and sample from a plain GPT;
    # a tensor-parallel or pipelined model generates only with every rank taking part.
    gathers_whole_model: bool
    # Every rank holds a full replica that must stay bit-identical (DDP's promise): the summary checks it.
    checks_replicas: bool
    # The strategy implements ZeRO stages: the summary records the stage it ran.
    records_zero_stage: bool
    # The LightningModule steps and clips itself (a pipeline schedule runs forward and backward): the Trainer
    # gets no gradient clipping and training/pipeline_module.py supplies the module.
    manual_optimization: bool
    # Several processes: each leaves torch.distributed together with its peers at the end (teardown.py), and
    # in a sweep's own process the run trains in a fresh process (DeepSpeed keeps its groups in module globals).
    multi_process: bool

    def summary_fields(self, layout: Layout) -> dict:
        """What summary.json records about how this strategy ran (beside the Layout itself)."""
        return {"zero_stage": layout.zero if self.records_zero_stage else None}


_T = StrategyTraits
# fmt: off
TRAITS: dict[str, StrategyTraits] = {
    #            sharded ckpt, gathers model, checks replicas, zero stage, manual optim, multi-process
    "single":    _T(False,       True,          False,           False,      False,        False),
    "ddp":       _T(False,       True,          True,            False,      False,        True),
    "deepspeed": _T(True,        True,          False,           True,       False,        True),
    "fsdp":      _T(True,        True,          False,           True,       False,        True),
    "tp":        _T(True,        False,         False,           False,      False,        True),
    "pipeline":  _T(True,        False,         False,           False,      True,         True),
}
# fmt: on


def traits_of(layout: Layout) -> StrategyTraits:
    """The traits of the strategy that runs `layout` (validation has refused unknown strategy names)."""
    return TRAITS[layout.parallelism]
