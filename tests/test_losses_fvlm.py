"""fVLM loss: against a slow float64 loop of the target rule of fVLM's released code (values and gradients), its
edge cases, the content-derived text ids, the learnable temperature, and the disease-aware extension."""

from __future__ import annotations

import math

import pytest
import torch

from radfinder.losses import (
    FvlmLoss,
    FvlmTemperature,
    LossInputError,
    anatomy_finding_ids,
    finding_set_ids,
    fvlm_loss,
    fvlm_loss_terms,
    fvlm_text_ids,
)


def _soft_ce(mat, t):
    """mean over rows p of -sum_q t[p][q] * log softmax_q(mat[p])."""
    n = len(mat)
    out = 0.0
    for p in range(n):
        lse = torch.logsumexp(torch.stack(mat[p]), 0)
        out = out - sum(t[p][q] * (mat[p][q] - lse) for q in range(n))
    return out / n


def released_targets(rows, a, normal, text_ids, finding_ids=None):
    """The target rule of fVLM's released pre-training code, as a plain float64 loop: semantic[p][q] = (both
    normal) OR (identical text) (OR, with finding ids, both abnormal with equal finding sets); semantic's diagonal
    set to 0; identity added; each row divided by its sum."""
    n = len(rows)
    sem = [[0.0] * n for _ in range(n)]
    for p in range(n):
        for q in range(n):
            i, j = rows[p], rows[q]
            both_normal = bool(normal[i, a]) and bool(normal[j, a])
            same_text = int(text_ids[i, a]) == int(text_ids[j, a])
            same = both_normal or same_text
            if finding_ids is not None:
                both_abnormal = not bool(normal[i, a]) and not bool(normal[j, a])
                same = same or (both_abnormal and int(finding_ids[i, a]) == int(finding_ids[j, a]))
            sem[p][q] = 1.0 if same else 0.0
    for p in range(n):
        sem[p][p] = 0.0
    t = [[sem[p][q] + (1.0 if p == q else 0.0) for q in range(n)] for p in range(n)]
    constant = all(v == t[0][0] for r in t for v in r)
    return [[v / sum(r) for v in r] for r in t], constant


def reference_loop(image, text, valid, normal, text_ids, temperature, finding_ids=None):
    """Per anatomy with an abnormal valid row: the released targets, L_a = (CE(S, T) + CE(S^T, T)) / 2 with S the
    cosine logits over temperature, constant targets skipped, sum over anatomies."""
    b, a_n, _ = image.shape
    total = image.sum() * 0.0
    per = []
    for a in range(a_n):
        rows = [i for i in range(b) if bool(valid[i, a])]
        if not rows or all(bool(normal[i, a]) for i in rows):
            per.append(0.0)
            continue
        t, constant = released_targets(rows, a, normal, text_ids, finding_ids)
        if constant:
            per.append(0.0)
            continue
        zi = [image[i, a] / torch.sqrt((image[i, a] ** 2).sum()) for i in rows]
        zt = [text[i, a] / torch.sqrt((text[i, a] ** 2).sum()) for i in rows]
        n = len(rows)
        s = [[(zi[p] * zt[q]).sum() / temperature for q in range(n)] for p in range(n)]
        st = [[s[q][p] for q in range(n)] for p in range(n)]
        la = (_soft_ce(s, t) + _soft_ce(st, t)) / 2
        per.append(float(la.detach()))
        total = total + la
    return total, per


def make_batch(b=7, a=4, d=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, a, d, generator=g, dtype=dtype)
    text = torch.randn(b, a, d, generator=g, dtype=dtype) + 0.5 * image
    valid = torch.rand(b, a, generator=g) < 0.8
    normal = torch.rand(b, a, generator=g) < 0.5
    text_ids = torch.randint(0, 4, (b, a), generator=g)
    text_ids[normal] = 99  # normal rows share the template text
    normal[:, a - 1] = True  # last anatomy: all normal -> skipped
    valid[0, 0], normal[0, 0] = True, False  # anatomy 0 qualifies
    return image, text, valid, normal, text_ids


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("disease_aware", [False, True])
def test_matches_float64_loop_values_and_gradients(seed, disease_aware):
    image, text, valid, normal, ids = make_batch(seed=seed)
    fids = torch.randint(0, 3, ids.shape, generator=torch.Generator().manual_seed(seed + 10)) if disease_aware else None
    temp = torch.tensor(0.09, dtype=torch.float64, requires_grad=True)
    x = [image.clone().requires_grad_(True), text.clone().requires_grad_(True), temp]
    out = fvlm_loss_terms(x[0], x[1], valid, normal, ids, x[2], finding_ids=fids)
    grads = torch.autograd.grad(out.loss, x)
    y = [image.clone().requires_grad_(True), text.clone().requires_grad_(True), temp.detach().clone().requires_grad_()]
    ref, per = reference_loop(y[0], y[1], valid, normal, ids, y[2], fids)
    ref_grads = torch.autograd.grad(ref, y)
    assert out.loss.item() > 0
    torch.testing.assert_close(out.loss, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.per_anatomy, torch.tensor(per, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    assert not bool(out.used[-1])  # the all-normal anatomy is skipped
    assert out.rows.tolist() == valid.sum(0).tolist()


def _explicit_ce(image, targets):
    """Both directions' soft CE for orthonormal embeddings (cosine logits = identity, symmetric) at temperature 1."""
    s = image[:, 0, :] @ image[:, 0, :].T
    return -(targets * torch.log_softmax(s, 1)).sum(1).mean()


def test_targets_are_ored_not_added():
    """Rows: two normal with identical text, a third normal with other words, one abnormal. Or-ed, every normal
    row's partners weigh as much as its own pair: (1, 1, 1, 0) / 3, whether the partner shares the text or not;
    adding would give (3, 2, 1, 0) / 6 and bring back instance discrimination among normals."""
    image = torch.eye(4, dtype=torch.float64)[:, None, :]
    valid = torch.ones(4, 1, dtype=torch.bool)
    normal = torch.tensor([[True], [True], [True], [False]])
    ids = torch.tensor([[5], [5], [6], [7]])
    got = fvlm_loss(image, image.clone(), valid, normal, ids, 1.0)
    t = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    want = _explicit_ce(image, t / t.sum(1, keepdim=True))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    added = torch.tensor([[3.0, 2, 1, 0], [2, 3, 1, 0], [1, 1, 2, 0], [0, 0, 0, 2]], dtype=torch.float64)
    assert abs(got.item() - _explicit_ce(image, added / added.sum(1, keepdim=True)).item()) > 1e-3


def test_disease_aware_term_is_ored_too():
    """Two abnormal rows with identical text and equal finding sets (two reasons) and a third with the same
    finding set but other words (one reason) all weigh 1; the normal row stays alone."""
    image = torch.eye(4, dtype=torch.float64)[:, None, :]
    valid = torch.ones(4, 1, dtype=torch.bool)
    normal = torch.tensor([[False], [False], [False], [True]])
    ids = torch.tensor([[5], [5], [6], [9]])
    fids = torch.tensor([[3], [3], [3], [0]])
    got = fvlm_loss(image, image.clone(), valid, normal, ids, 1.0, finding_ids=fids)
    t = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(got, _explicit_ce(image, t / t.sum(1, keepdim=True)), rtol=1e-12, atol=1e-12)


def test_zero_and_differentiable_when_nothing_qualifies():
    image, text, valid, normal, ids = make_batch()
    normal[:] = True
    im = image.clone().requires_grad_(True)
    tm = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
    out = fvlm_loss(im, text, valid, normal, ids, tm)
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    assert torch.count_nonzero(im.grad) == 0
    # constant T: a single valid abnormal row
    valid2 = torch.zeros_like(valid)
    valid2[0, 0], normal[0, 0] = True, False
    res = fvlm_loss_terms(image, text, valid2, normal, ids, 0.07)
    assert res.loss.item() == 0.0 and not bool(res.used.any())


def test_temperature_divides_and_is_used_as_given():
    image, text, valid, normal, ids = make_batch(seed=4)
    a = fvlm_loss(image, text, valid, normal, ids, 0.05)
    b = fvlm_loss(image * 3.0, text, valid, normal, ids, torch.tensor(0.05, dtype=torch.float64))
    torch.testing.assert_close(a, b)  # normalised inside
    ref, _ = reference_loop(image, text, valid, normal, ids, 0.7)  # outside fVLM's clamp range: not clamped here
    torch.testing.assert_close(fvlm_loss(image, text, valid, normal, ids, 0.7), ref)


def test_learnable_temperature_module():
    m = FvlmTemperature()
    assert math.isclose(m().item(), 0.07, rel_tol=1e-6)
    with torch.no_grad():
        m.temperature.fill_(2.0)
    assert m().item() == 0.5
    with torch.no_grad():
        m.temperature.fill_(-1.0)
    assert math.isclose(m().item(), 0.001, rel_tol=1e-6)
    loss_mod = FvlmLoss().double()
    image, text, valid, normal, ids = make_batch(seed=5)
    out = loss_mod(image, text, valid, normal, ids)
    out.loss.backward()
    assert loss_mod.temp.temperature.grad is not None and loss_mod.temp.temperature.grad.abs() > 0
    with pytest.raises(LossInputError):
        FvlmLoss(disease_aware=True)(image, text, valid, normal, ids)


def test_text_ids_and_finding_set_ids():
    texts = [["Lung shows no significant abnormalities.", "Cardiomegaly."],
             ["Lung shows no significant abnormalities.", "Heart shows no significant abnormalities."]]  # fmt: skip
    ids = fvlm_text_ids(texts)
    assert ids.shape == (2, 2) and ids.dtype == torch.int64
    assert ids[0, 0] == ids[1, 0] and ids[0, 1] != ids[1, 1]
    assert torch.equal(ids, fvlm_text_ids(texts))
    f = torch.tensor([[[1, 0, 1], [0, 0, 0]], [[1, 0, 1], [0, 1, 0]]])
    fi = finding_set_ids(f)
    assert fi[0, 0] == fi[1, 0] == 5 and fi[0, 1] == 0 and fi[1, 1] == 2


def test_bad_inputs_are_refused():
    image, text, valid, normal, ids = make_batch()
    with pytest.raises(LossInputError, match="same shape"):
        fvlm_loss(image, text[:, :2], valid, normal, ids, 0.07)
    with pytest.raises(LossInputError, match="bool"):
        fvlm_loss(image, text, valid.int(), normal, ids, 0.07)
    with pytest.raises(LossInputError, match="valid"):
        fvlm_loss(image, text, valid[:3], normal, ids, 0.07)


def test_anatomy_finding_ids_from_report_labels():
    from radfinder.text.findings import CTRATE_FINDINGS

    y = torch.zeros(3, 18, dtype=torch.int64)
    col = {f: i for i, f in enumerate(CTRATE_FINDINGS)}
    y[0, col["Emphysema"]] = y[0, col["Cardiomegaly"]] = 1
    y[1, col["Emphysema"]] = 1
    y[1, col["Lymphadenopathy"]] = 1  # no anatomy: ignored
    y[2, col["Lung nodule"]] = 1
    y[2, col["Cardiomegaly"]] = -1  # unknown is not positive
    ids = anatomy_finding_ids(y, ["lung", "heart", "aorta"])
    assert ids[0, 0] == ids[1, 0] != ids[2, 0]  # same lung finding set for studies 0 and 1
    assert ids[0, 1] != ids[1, 1] == ids[2, 1] == 0 and (ids[:, 2] == 0).all()
