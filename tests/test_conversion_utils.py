"""The checks every converter shares (`slotssm_hf.conversion.conversion_utils`), on a tiny model of each family."""

import pytest
import torch
from saved_folders import TINY, family_of, tiny_config

from slotssm_hf.conversion.conversion_utils import state_dict_problems
from slotssm_hf.registry import load

FAMILY_CASES = [case for case in TINY if "-" not in case]


def fitting_state(case):
    model_class = load(family_of(case).heads[1].class_path)
    config = tiny_config(case)
    return model_class, config, {k: v.clone() for k, v in model_class(config).state_dict().items()}


@pytest.mark.parametrize("case", FAMILY_CASES)
def test_a_fitting_state_dict_has_no_problems(case):
    model_class, config, state = fitting_state(case)
    assert state_dict_problems(state, model_class, config) == []


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.complex64])
@pytest.mark.parametrize("case", FAMILY_CASES)
def test_integer_or_complex_values_for_a_real_weight_are_named(case, dtype):
    """Loading with assign=True (which keeps the source dtypes) would keep them: they must be refused first."""
    model_class, config, state = fitting_state(case)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].to(dtype)
    assert state_dict_problems(state, model_class, config) == [
        f"wrong dtype: ['{key}: {dtype} instead of a real floating-point type']"
    ]


@pytest.mark.parametrize("case", FAMILY_CASES)
def test_missing_unexpected_and_mis_shaped_keys_are_each_listed(case):
    model_class, config, state = fitting_state(case)
    first, second = list(state)[:2]
    removed = state.pop(first)
    state["surprise"] = removed
    state[second] = torch.zeros(*state[second].shape, 1)
    assert state_dict_problems(state, model_class, config) == [
        f"missing: ['{first}']", "unexpected: ['surprise']",
        f"wrong shape: ['{second}: {tuple(state[second].shape)} instead of {tuple(state[second].shape[:-1])}']",
    ]  # fmt: skip
