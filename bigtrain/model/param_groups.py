"""Which parameters weight decay applies to: matrices (dim >= 2) decay, biases and norm gains do not (GPT-2/3
practice, nanoGPT's configure_optimizers). One rule for the optimizer (training/module.py) and for anything that
must know the optimizer's parameter order without building it (parallel/neutral.py reads torch optimizer states,
whose ids are positions in this order). Torch-free: it sees names and ranks only."""

from __future__ import annotations

from collections.abc import Iterable


def decay_split(named_ndims: Iterable[tuple[str, int]]) -> tuple[list[str], list[str]]:
    """(decayed names, undecayed names), each in the order given (the model's named_parameters order)."""
    named = list(named_ndims)
    return [n for n, d in named if d >= 2], [n for n, d in named if d < 2]
