"""Sentence splitting, section splitting and the report-table readers."""

from __future__ import annotations

import pytest

from radfinder.text.reports import (
    ReportReadError,
    read_ctclip_labeled,
    read_ctrate_reports,
    read_inspect_impressions,
    read_merlin_reports,
    read_reports,
    read_text_report,
)
from radfinder.text.sections import detect_language, split_sections
from radfinder.text.sentences import sentence_spans, split_sentences


def test_sentences_survive_abbreviations_numbers_and_lists():
    text = (
        "A nodule of approx. 3.2 x 1.1 cm. No effusion. Dr. Smith compared it on 12.03.2021 vs. 01.02.2020, "
        "i.e. stable. See no. 5 e.g. here.\nIMPRESSION:\n1. Nodule.\n2. Small effusion. Z.n. OP, z.B. links."
    )
    assert split_sentences(text) == [
        "A nodule of approx. 3.2 x 1.1 cm.",
        "No effusion.",
        "Dr. Smith compared it on 12.03.2021 vs. 01.02.2020, i.e. stable.",
        "See no. 5 e.g. here.",
        "IMPRESSION:",
        "1. Nodule.",
        "2. Small effusion.",
        "Z.n. OP, z.B. links.",
    ]
    for a, b in sentence_spans(text):
        assert text[a:b] == text[a:b].strip()


def test_sentences_unit_at_end_and_semicolon():
    assert split_sentences("It measures 3 mm. Next one; Aeration normal; (a; b)") == [
        "It measures 3 mm.",
        "Next one;",
        "Aeration normal; (a; b)",
    ]


def test_sections_english_german_and_numbered_conclusion():
    s = split_sections("CLINICAL HISTORY: cough.\nFINDINGS: Nodule. No effusion.\nIMPRESSIONS:\n1. Nodule.\n2. None.")
    assert (s.findings, s.impressions, s.other["history"]) == ("Nodule. No effusion.", "1. Nodule.\n2. None.", "cough.")
    s = split_sections("Befund:\nKein Erguss.\n\nBeurteilung:\nUnauffällig.")
    assert (s.findings, s.impressions) == ("Kein Erguss.", "Unauffällig.")
    s = split_sections("LUNGS: clear.\nHEART: normal.\n\n1. No acute findings.\n2. Stable nodule.")
    assert (s.findings, s.impressions) == ("LUNGS: clear.\nHEART: normal.", "1. No acute findings.\n2. Stable nodule.")
    s = split_sections("Findings: nodule. CONCLUSION: benign.")
    assert (s.findings, s.impressions) == ("nodule.", "benign.")
    assert split_sections("Just prose, no headers.").impressions == ""
    assert detect_language("Kein Erguss. Die Lunge ist unauffällig.") == "de"
    assert detect_language("No effusion. The lungs are clear.") == "en"


def test_readers(tmp_path):
    ct = tmp_path / "ct.csv"
    ct.write_text(
        "VolumeName,ClinicalInformation_EN,Technique_EN,Findings_EN,Impressions_EN\n"
        'train_1_a_1,cough,CT,"Nodule 5 mm, series 2 image 3.",Nodule.\n'
    )
    (r,) = read_ctrate_reports(ct)
    assert (r.id, r.findings, r.impressions, r.source) == (
        "train_1_a_1",
        "Nodule 5 mm, series 2 image 3.",
        "Nodule.",
        "ctrate",
    )
    assert r.text == "Findings: Nodule 5 mm, series 2 image 3.\nImpressions: Nodule.\n"

    mer = tmp_path / "merlin.csv"
    mer.write_text(
        'study id,Split,Findings\nA1,train,"FINDINGS: Liver normal.\nIMPRESSION: Normal."\n'
        'A2,test,"LUNGS: clear.\n\n1. No acute process.\n2. Old fracture."\n'
    )
    ms = read_merlin_reports(mer)
    assert [(m.id, m.findings, m.impressions, m.split) for m in ms] == [
        ("A1", "Liver normal.", "Normal.", "train"),
        ("A2", "LUNGS: clear.", "1. No acute process.\n2. Old fracture.", "test"),
    ]
    assert [m.id for m in read_merlin_reports(mer, split="test")] == ["A2"]

    ins = tmp_path / "impressions_test.tsv"
    ins.write_text("impression_id\timpressions\n7\tNo PE.\n")
    (i,) = read_inspect_impressions(ins)
    assert (i.id, i.findings, i.impressions) == ("7", "", "No PE.")

    lab = tmp_path / "cls.csv"
    lab.write_text('AccessionNo,report_text,Emphysema\nt1,"Emphysema seen. "" Emphysema."" Nodule.",1\n')
    (c,), labels = read_ctclip_labeled(lab)
    assert (c.findings, c.impressions) == ("Emphysema seen.", "Emphysema. Nodule.")
    assert labels["Emphysema"].tolist() == [1]

    txt = tmp_path / "r1.txt"
    txt.write_text("Befund: Kein Erguss.\nBeurteilung: Unauffällig.")
    t = read_text_report(txt)
    assert (t.id, t.findings, t.impressions, t.language) == ("r1", "Kein Erguss.", "Unauffällig.", "de")

    assert [x.id for x in read_reports(ct)] == ["train_1_a_1"]
    assert [x.id for x in read_reports(mer)] == ["A1", "A2"]
    assert [x.id for x in read_reports(ins)] == ["7"]


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(ReportReadError, match="missing.csv: file not found"):
        read_ctrate_reports(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ReportReadError, match=r"bad.csv: not a CT-RATE report table"):
        read_ctrate_reports(bad)
    with pytest.raises(ReportReadError, match="cannot tell the report format"):
        read_reports(bad)
