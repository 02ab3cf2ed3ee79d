"""neutral_load.py's Adam step count, in process: what ZeRO 1-3 does with the states a resume sets.

ZeRO hands torch's AdamW one flat fp32 partition per parameter group and steps the groups one optimizer.step() at a
time. The step a neutral file holds is one fp32 tensor; set into every state as that same object, each step would
count once per group, and the bias correction of every update after the load would be off (steps 6-8 of a resume at
step 4 drifted by up to 3.4e-3 on the nano model while step 5 matched).
"""

from __future__ import annotations

import pytest
import torch

from bigtrain.parallel.neutral_load import _adam, _create_adam_states, set_adam_step


def _two_groups(seed: int) -> tuple[list[torch.Tensor], torch.optim.AdamW]:
    gen = torch.Generator().manual_seed(seed)
    flats = [torch.randn(64, generator=gen).requires_grad_(), torch.randn(8, generator=gen).requires_grad_()]
    groups = [{"params": [flats[0]], "weight_decay": 0.1}, {"params": [flats[1]], "weight_decay": 0.0}]
    return flats, torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), foreach=True)


def _step_group_by_group(optimizer: torch.optim.Optimizer, flats: list[torch.Tensor], grads: list[torch.Tensor]):
    """As DeepSpeed's ZeRO 1/2 _optimizer_step does: the optimizer sees one group per step() call."""
    groups = optimizer.param_groups
    for i, (flat, grad) in enumerate(zip(flats, grads, strict=True)):
        flat.grad = grad.clone()
        optimizer.param_groups = [groups[i]]
        optimizer.step()
        optimizer.param_groups = groups
        flat.grad = None


@pytest.mark.parametrize("file_step", [torch.tensor(4.0), 4], ids=["tensor", "int"])
def test_set_states_step_like_the_uninterrupted_optimizer(file_step):
    gen = torch.Generator().manual_seed(1)
    grads = [[torch.randn(64, generator=gen), torch.randn(8, generator=gen)] for _ in range(6)]
    ref_flats, ref = _two_groups(0)
    for g in grads[:4]:
        _step_group_by_group(ref, ref_flats, g)

    flats, resumed = _two_groups(0)
    _create_adam_states(object(), resumed)  # no ZeRO optimizer around it: the groups' own parameters
    with torch.no_grad():
        for flat, ref_flat in zip(flats, ref_flats, strict=True):
            flat.copy_(ref_flat)
            for key in ("exp_avg", "exp_avg_sq"):
                resumed.state[flat][key].copy_(ref.state[ref_flat][key])
    set_adam_step(resumed, file_step)  # one object for every state, as the file's step is
    assert len({id(st["step"]) for st in resumed.state.values()}) == len(flats)

    for g in grads[4:]:
        _step_group_by_group(ref, ref_flats, g)
        _step_group_by_group(resumed, flats, g)
    for flat, ref_flat in zip(flats, ref_flats, strict=True):
        assert float(resumed.state[flat]["step"]) == float(ref.state[ref_flat]["step"]) == 6.0
        torch.testing.assert_close(flat, ref_flat, rtol=0, atol=0)


def test_adam_state_of_a_file_gets_its_own_step():
    shared = torch.tensor(4.0)
    states = [_adam({"exp_avg": torch.zeros(2), "exp_avg_sq": torch.zeros(2), "step": shared}) for _ in range(2)]
    assert states[0]["step"] is not shared and states[0]["step"] is not states[1]["step"]
    assert states[0]["step"].dtype == torch.float32 and float(states[1]["step"]) == 4.0
