"""Report-generation metrics against independent references: nltk's corpus BLEU, the rouge-score package,
the bert-score package (same local MiniLM), scikit-learn's F1 for clinical efficacy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from radfinder.eval.report_generation import (
    BertScorer,
    clinical_efficacy,
    corpus_bleu,
    most_common_report,
    nearest_report,
    report_generation_metrics,
    rouge_l,
    tokenize,
)
from radfinder.text.findings import CTRATE_FINDINGS
from radfinder.text.labeler import RuleLabeler

REFS = [
    "Cardiomegaly. No pleural effusion. A 6 mm nodule in the right upper lobe.",
    "Bilateral pleural effusions. Atelectasis in the left lower lobe.",
    "No acute cardiopulmonary abnormality. The heart is not enlarged.",
    "Emphysema in both upper lobes. Coronary artery calcifications.",
]
CANDS = [
    "Cardiomegaly. Small nodule in the right upper lobe.",
    "Left pleural effusion with atelectasis of the left lower lobe.",
    "No acute abnormality. Heart size is normal.",
    "Coronary artery calcifications. No emphysema.",
]


def test_bleu_matches_nltk():
    from nltk.translate.bleu_score import corpus_bleu as nltk_bleu

    refs = [[tokenize(r)] for r in REFS]
    hyps = [tokenize(c) for c in CANDS]
    assert corpus_bleu(CANDS, REFS, 1) == pytest.approx(nltk_bleu(refs, hyps, weights=(1, 0, 0, 0)), abs=1e-12)
    assert corpus_bleu(CANDS, REFS, 4) == pytest.approx(nltk_bleu(refs, hyps), abs=1e-12)
    assert corpus_bleu(REFS, REFS, 4) == pytest.approx(1.0)
    assert corpus_bleu(["xyz qqq"], ["abc def"], 4) == 0.0


def test_rouge_l_is_rouge_score_mean():
    from rouge_score import rouge_scorer

    sc = rouge_scorer.RougeScorer(["rougeL"])
    expect = np.mean([sc.score(r, c)["rougeL"].fmeasure for c, r in zip(CANDS, REFS, strict=True)])
    assert rouge_l(CANDS, REFS) == pytest.approx(expect, abs=1e-12)
    # German: umlauts kept (the default tokenizer would drop them and score 0 here)
    assert rouge_l(["Pleuraerguss beidseits, Kardiomegalie."], ["Kardiomegalie. Pleuraerguss beidseits."], "de") > 0.6
    assert rouge_l(["Größe über"], ["Größe über"], "de") == pytest.approx(1.0)


@pytest.fixture(scope="module")
def minilm_scorer():
    return BertScorer()


def test_bertscore_matches_bert_score_package(minilm_scorer):
    import bert_score

    from radfinder.models.text import minilm_dir

    ours = minilm_scorer
    p, r, f = ours.score(CANDS, REFS)
    bp, br, bf = bert_score.score(CANDS, REFS, model_type=str(minilm_dir()), num_layers=ours.layer, device="cpu")
    np.testing.assert_allclose(p, bp.numpy(), atol=1e-4)
    np.testing.assert_allclose(r, br.numpy(), atol=1e-4)
    np.testing.assert_allclose(f, bf.numpy(), atol=1e-4)
    same = ours.score(REFS[:1], REFS[:1])[2]
    assert same[0] == pytest.approx(1.0, abs=1e-6)


EDGE_PAIRS = [  # (candidate, reference)
    ("", REFS[0]),  # empty candidate
    (CANDS[1], ""),  # empty reference
    ("", ""),
    ("   ", REFS[2]),  # blank: no scored piece after stripping
    ("Cardiomegaly.", REFS[0]),  # one word
    (REFS[3], "Emphysema."),
    ("\u2603", REFS[1]),  # a candidate of one unknown piece ([UNK] only)
    ("Small \u2603 nodule in the \U0001F600 right upper lobe.", REFS[0]),  # unknown pieces among known ones
    (REFS[2], REFS[2]),  # identical
    ("nodule " * 600, "nodule " * 550 + "effusion " * 50),  # past 512 pieces: the differing end is truncated away
]


def test_bertscore_edge_cases_match_bert_score_package(monkeypatch, minilm_scorer):
    import bert_score
    import bert_score.utils as bsu

    from radfinder.models.text import minilm_dir

    # bert-score 0.3.13 encodes an empty text with `build_inputs_with_special_tokens([])`, which transformers 5's
    # BertTokenizer no longer has; its result for BERT is [CLS] [SEP], given here. Everything else is bert-score's.
    encode = bsu.sent_encode

    def sent_encode(tokenizer, sent):
        if sent.strip() == "":
            return [tokenizer.cls_token_id, tokenizer.sep_token_id]
        return encode(tokenizer, sent)

    monkeypatch.setattr(bsu, "sent_encode", sent_encode)
    ours = minilm_scorer
    cands, refs = [c for c, _ in EDGE_PAIRS], [r for _, r in EDGE_PAIRS]
    p, r, f = ours.score(cands, refs)
    # batch_size=1: bert-score pads the pairs of a batch with similarity 0, which caps a negative best match of a
    # text shorter than its batch's longest at 0 (a batch-dependent result; ours is the unpadded one)
    bp, br, bf = bert_score.score(cands, refs, model_type=str(minilm_dir()), num_layers=ours.layer, device="cpu",
                                  batch_size=1)  # fmt: skip
    for got, want in ((p, bp), (r, br), (f, bf)):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    assert (p[:4] == 0).all() and (r[:4] == 0).all() and (f[:4] == 0).all()  # exactly 0, not a small value
    assert p[6] > 0 and r[6] > 0  # [UNK] is scored, as bert-score scores it
    assert f[8] == pytest.approx(1.0, abs=1e-6) and f[9] == pytest.approx(1.0, abs=1e-6)


def test_clinical_efficacy_against_sklearn():
    lab = RuleLabeler()
    res = clinical_efficacy(CANDS, REFS, lab)
    g = np.array([[lab.label(c).labels[f] for f in CTRATE_FINDINGS] for c in CANDS])
    r = np.array([[lab.label(x).labels[f] for f in CTRATE_FINDINGS] for x in REFS])
    evaluated = [k for k in range(18) if (r[:, k] == 1).any()]
    assert sorted(res["per_finding"]) == sorted(CTRATE_FINDINGS[k] for k in evaluated)
    assert set(res["skipped"]) == set(CTRATE_FINDINGS) - set(res["per_finding"])
    f1s = []
    for k in evaluated:
        f1 = f1_score(r[:, k] == 1, g[:, k] == 1, zero_division=0)
        assert res["per_finding"][CTRATE_FINDINGS[k]]["f1"] == pytest.approx(f1, abs=1e-12)
        f1s.append(f1)
    assert res["ce_macro_f1"] == pytest.approx(np.mean(f1s), abs=1e-12)
    # the labeler sees the negated emphysema: a false negative for that finding
    assert res["per_finding"]["Emphysema"]["f1"] == 0.0


def test_all_metrics_together():
    m = report_generation_metrics(CANDS, REFS, bertscore=False)
    assert {"bleu1", "bleu4", "rouge_l", "ce_macro_f1", "ce_per_finding"} <= set(m)
    assert 0 < m["bleu4"] < m["bleu1"] < 1 and 0 < m["rouge_l"] < 1
    perfect = report_generation_metrics(REFS, REFS, bertscore=False)
    assert perfect["bleu4"] == pytest.approx(1.0) and perfect["rouge_l"] == pytest.approx(1.0)
    assert perfect["ce_macro_f1"] == 1.0


def test_baselines():
    train = ["Normal chest.", "Cardiomegaly.", "Nodule.", "No abnormality seen.", "Heart enlarged, big."]
    emb = np.eye(5)[:, :4] + 0.01
    emb[4] = [0, 1, 0, 0.2]
    q = np.array([[0.1, 0.9, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
    assert nearest_report(q, emb, train) == ["Cardiomegaly.", "No abnormality seen."]
    labels = np.array([[0, 0], [1, 0], [0, 1], [0, 0], [1, 0]])
    # [0, 0] and [1, 0] both occur twice: the shortest report among them wins
    assert most_common_report(train, labels) == "Normal chest."
    assert most_common_report(train[:3], labels[:3]) == "Nodule."  # all once: the shortest of all
