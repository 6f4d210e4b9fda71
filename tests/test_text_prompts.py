"""Prompt bank: built-in validity, user merge, validation errors."""

from __future__ import annotations

import pytest
import yaml

from radfinder.errors import ConfigError
from radfinder.text.findings import CTRATE_FINDINGS
from radfinder.text.prompts import load_prompt_bank


def test_builtin_bank_is_complete():
    bank = load_prompt_bank()
    assert bank.findings == CTRATE_FINDINGS
    for f in CTRATE_FINDINGS:
        pos, neg = bank.disease_prompts(f)
        assert len(pos) == len(neg) == 3
        assert all(p.strip() for p in pos + neg)
        assert len(set(pos + neg)) == 6
        assert len(pos[0]) < len(pos[2]) and len(neg[0]) < len(neg[2])  # short to detailed
    pairs = bank.zero_shot_pairs("Lung nodule")
    assert pairs[0] == ("Lung nodule.", "No Lung nodule.")
    assert pairs[1] == ("Findings are compatible with Lung nodule.", "Findings are not compatible with Lung nodule.")
    assert pairs[6] == ("Lung nodule is present.", "Lung nodule is not present.")
    assert len(pairs) == 7


def test_user_bank_merges_over_builtin(tmp_path):
    user = tmp_path / "p.yaml"
    user.write_text(
        yaml.safe_dump(
            {
                "disease_prompts": {
                    "Emphysema": {"positive": ["a", "b", "c"], "negative": ["d", "e", "f"]},
                    "Pneumothorax": {"positive": ["p1", "p2", "p3"], "negative": ["n1", "n2", "n3"]},
                }
            }
        )
    )
    bank = load_prompt_bank(user)
    assert bank.disease_prompts("Emphysema") == (("a", "b", "c"), ("d", "e", "f"))
    assert bank.disease_prompts("Pneumothorax")[0] == ("p1", "p2", "p3")
    assert bank.disease_prompts("Atelectasis") == load_prompt_bank().disease_prompts("Atelectasis")
    with pytest.raises(ConfigError, match="no prompts for finding 'Nope'"):
        bank.disease_prompts("Nope")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"disease_prompts": {"Emphysema": {"positive": ["a", "b"], "negative": ["d", "e", "f"]}}}, "exactly 3"),
        ({"disease_prompts": {"Emphysema": {"positive": ["a", "", "c"], "negative": ["d", "e", "f"]}}}, "empty"),
        ({"zero_shot_templates": [["{a}.", "No {a}."]]}, "exactly 7"),
        ({"zero_shot_templates": [["x", "y"]] * 7}, "contain"),
        ({"extra": 1}, "unknown key"),
    ],
)
def test_invalid_user_banks(tmp_path, data, message):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_prompt_bank(p)
    with pytest.raises(ConfigError, match="not found"):
        load_prompt_bank(tmp_path / "missing.yaml")
