"""The non-finite guard's check (training/guards.py `all_finite`): the same verdict as an elementwise isfinite over
every gradient, in every floating dtype, including finite values whose sum overflows (the fast path's only doubt)."""

from __future__ import annotations

import pytest
import torch

from bigtrain.training.guards import all_finite

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def grads(dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=g).to(dtype) for shape in [(64, 48), (48,), (0,), (7, 3, 5), (1,)]]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), None], ids=str)
@pytest.mark.parametrize("where", [0, 1, 3, 4])
def test_all_finite_agrees_with_elementwise_isfinite(dtype, bad, where):
    tensors = grads(dtype)
    if bad is not None:
        tensors[where].view(-1)[-1] = bad
    expected = all(bool(torch.isfinite(t).all()) for t in tensors)
    got = all_finite(tensors)
    assert got.dtype == torch.bool and got.dim() == 0
    assert bool(got) is expected is (bad is None)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_finite_values_whose_sum_overflows_are_finite(dtype):
    """Sums beyond the dtype's (or float32's) range are inf on finite values: the elementwise check must clear them."""
    big = torch.finfo(dtype).max
    tensors = [torch.full((1000,), big, dtype=dtype), torch.full((10,), -big, dtype=dtype)]
    assert bool(all_finite(tensors)) is True
    tensors[1][3] = float("nan")
    assert bool(all_finite(tensors)) is False


def test_opposite_infinities_do_not_cancel():
    t = torch.zeros(8)
    t[0], t[1] = float("inf"), float("-inf")
    assert bool(all_finite([t])) is False


def test_nothing_to_check_is_finite():
    assert bool(all_finite([])) is True
