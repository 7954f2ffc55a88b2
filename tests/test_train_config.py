"""The run file (train/config.py): settings that the rest of the run would make do nothing are errors."""

import pytest

from configaformer import ConfigError
from configaformer.train.config import load_run_config

from .conftest import ATTN, tiny


def run(**sections):
    return {"model": tiny([ATTN]), "data": {"path": "d"}, **sections}


@pytest.mark.parametrize("sections, path, other", [
    ({"train": {"schedule": "constant", "min_lr_ratio": 0.5}}, "train.min_lr_ratio", "train.schedule"),
    ({"objective": {"kind": "causal", "mask_rate": 0.3}}, "objective.mask_rate", "objective.kind"),
    ({"sample": {"max_new_tokens": 0, "temperature": 0.1}}, "sample.temperature", "sample.max_new_tokens"),
    ({"sample": {"max_new_tokens": 0, "prompt": "x"}}, "sample.prompt", "sample.max_new_tokens"),
    ({"heads": {"lm": {"labels": "none", "loss_weight": 2.0}}}, "heads.lm.loss_weight", "heads.lm.labels"),
])
def test_a_setting_the_run_ignores_is_an_error_naming_both_keys(sections, path, other):
    with pytest.raises(ConfigError) as info:
        load_run_config(run(**sections))
    problems = {p.path: p.message for p in info.value.problems}
    assert path in problems and other in problems[path], problems


def test_the_same_settings_at_their_defaults_or_in_use_are_fine():
    load_run_config(run(train={"schedule": "constant", "min_lr_ratio": 0.1}, objective={"kind": "masked", "mask_rate": 0.3},
                        sample={"max_new_tokens": 0}, heads={"lm": {"labels": "none"}}))
    load_run_config(run(objective={"kind": "auto", "mask_rate": 0.3}))  # auto may turn out masked
