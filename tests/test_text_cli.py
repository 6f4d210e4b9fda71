"""CLI: mine-text, label (rules and llm against a local server process), prompts."""

from __future__ import annotations

import json

import pandas as pd

from llm_server import running_server as llm_server
from radfinder.cli import main
from radfinder.text.findings import CTRATE_FINDINGS

CSV = (
    "VolumeName,ClinicalInformation_EN,Technique_EN,Findings_EN,Impressions_EN\n"
    'v1,,,"Pleural effusion. A 4 mm nodule (series 2, image 30). Port catheter.",Nodule.\n'
    'v2,,,"No pleural effusion. No nodule.",Normal chest CT.\n'
)


def test_mine_text_plain_and_csv(tmp_path, capsys):
    f = tmp_path / "r.txt"
    f.write_text("FINDINGS: Nodule 5 mm (series 4, image 38). Cyst in image 40.")
    assert main(["mine-text", str(f), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["series"], r["images"], r["snippet"]) for r in out] == [(4, [38], "Nodule 5 mm."), (4, [40], "Cyst.")]
    assert all({"series", "images", "snippet", "start", "end"} <= set(r) for r in out)
    c = tmp_path / "reports.csv"
    c.write_text(CSV)
    assert main(["mine-text", str(c), "--csv", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(d["id"], [(r["series"], r["images"]) for r in d["references"]]) for d in out] == [("v1", [(2, [30])])]
    assert main(["mine-text", str(tmp_path / "missing.txt")]) == 2


def test_label_rules_and_llm(tmp_path, capsys):
    c = tmp_path / "reports.csv"
    c.write_text(CSV)
    out = tmp_path / "labels.csv"
    assert main(["label", str(c), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    table = pd.read_csv(out)
    assert list(table.columns) == ["VolumeName", *CTRATE_FINDINGS]
    assert table.set_index("VolumeName").loc[
        "v1", ["Pleural effusion", "Lung nodule", "Medical material"]
    ].tolist() == [1, 1, 1]
    assert table.set_index("VolumeName").loc["v2"].sum() == 0
    assert summary["reports"] == 2 and summary["positives"]["Lung nodule"] == 1

    with llm_server() as (base, stats):
        out2 = tmp_path / "llm.csv"
        args = ["label", str(c), "--out", str(out2), "--backend", "llm", "--llm-base-url", base, "--llm-model", "t"]
        assert main(args) == 0
        t2 = pd.read_csv(out2).set_index("VolumeName")
        assert t2.loc["v1", "Pleural effusion"] == 1 and t2.loc["v2", "Pleural effusion"] == 0
        assert stats()["requests"] == 2 * 18
        assert main(args) == 0  # second run is answered from the cache next to the output
        assert stats()["requests"] == 2 * 18
    assert main(["label", str(c), "--out", str(out), "--backend", "nope"]) == 2


def test_prompts_command(capsys):
    assert main(["prompts", "--finding", "Emphysema", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["findings"]["Emphysema"]["positive"]) == 3
    assert len(data["findings"]["Emphysema"]["zero_shot"]) == 7
