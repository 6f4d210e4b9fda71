"""swca's soft targets alpha I + (1 - alpha) rownorm(beta S + gamma K): a float64 loop of that rule, the true pair's
share independent of the batch size on simulated labels, studies with unknown labels left out, both directions
of the loss with alpha < 1 against a float64 loop, and the volumetric part of the spatial term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radfinder.features.store import AnatomyCoverage
from radfinder.features.volume_profile import (
    CITED_BINS,
    ORGAN_CELLS,
    PROFILE_WIDTH,
    cited_profile,
    organ_profile,
    split_profile_rows,
    volume_profile_row,
)
from radfinder.losses import LossInputError, soft_contrastive_loss
from radfinder.losses.soft_targets import (
    VolumeProfiles,
    labels_known,
    profile_overlap,
    report_soft_targets,
    soft_target_pair,
    spatial_similarity,
)
from radfinder.text.findings import CTRATE_FINDINGS
from radfinder.text.ontology import knowledge_similarity


def loop_targets(s, k, known, alpha, beta, gamma):
    """The rule as written in the issue, one entry at a time: off-diagonal mass m_ij = beta S_ij + gamma K_ij for
    i != j when both studies have known labels; W_ii = alpha when row i has mass, else 1; W_ij = (1 - alpha) m_ij /
    sum_j m_ij."""
    n = len(s)
    w = [[0.0] * n for _ in range(n)]
    for i in range(n):
        m = [beta * s[i][j] + gamma * k[i][j] if j != i and known[i] and known[j] else 0.0 for j in range(n)]
        tot = sum(m)
        for j in range(n):
            if j == i:
                w[i][j] = alpha if tot > 0 else 1.0
            else:
                w[i][j] = (1 - alpha) * m[j] / tot if tot > 0 else 0.0
    return np.array(w)


def simulated_labels(n, seed=0):
    """A quarter of the studies normal, the others with random positive findings (0.15 each, at least one)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(CTRATE_FINDINGS))) < 0.15).astype(np.int64)
    for i in range(n):
        if i % 4 == 0:
            y[i] = 0
        elif not y[i].any():
            y[i, rng.integers(len(CTRATE_FINDINGS))] = 1
    return y


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_targets_match_a_float64_loop(alpha):
    rng = np.random.default_rng(1)
    n = 7
    s = rng.random((n, n)) * (rng.random((n, n)) < 0.6)  # asymmetric: the two directions differ
    k = rng.random((n, n))
    k[3] = 0.0  # a row without mass once the diagonal goes
    k[:, 3] = 0.0
    s[3] = 0.0
    s[:, 3] = 0.0
    s[3, 3] = k[3, 3] = 1.0
    known = np.ones(n, bool)
    known[5] = False
    w, w_t2i = soft_target_pair(n, alpha=alpha, beta=0.7, gamma=0.4, spatial=s, knowledge=k, known=known)
    assert w.dtype == torch.float64
    np.testing.assert_allclose(w.numpy(), loop_targets(s, k, known, alpha, 0.7, 0.4), rtol=0, atol=1e-15)
    np.testing.assert_allclose(w_t2i.numpy(), loop_targets(s.T, k.T, known, alpha, 0.7, 0.4), rtol=0, atol=1e-15)
    np.testing.assert_allclose(w.sum(1).numpy(), 1.0, atol=1e-15)
    assert w[3, 3] == 1.0 and w[5, 5] == 1.0 and w[5].sum() == 1.0 and w[:, 5].sum() == 1.0


def test_true_pair_share_does_not_depend_on_batch_size():
    """The issue's setting (a quarter normal, gamma 0.5): the dense rule's share falls from 32 to 256 studies;
    the rownorm rule keeps alpha in every row that has a similar study, for the same studies at both sizes."""
    y = simulated_labels(256)
    flags = np.random.default_rng(2).random((256, 4)) < 0.3
    k_all = knowledge_similarity(y, CTRATE_FINDINGS)
    s_all = spatial_similarity(flags)
    shares = {}
    dense = {}
    for b in (32, 256):
        k, s = k_all[:b, :b], s_all[:b, :b]
        w, w_t2i = soft_target_pair(b, alpha=0.6, beta=0.5, gamma=0.5, spatial=s, knowledge=k,
                                    known=labels_known(y[:b]))  # fmt: skip
        shares[b] = (np.diag(w.numpy())[:32], np.diag(w_t2i.numpy())[:32])
        old = np.eye(b) + 0.5 * k
        dense[b] = np.mean(np.diag(old) / old.sum(1))
    for d in (0, 1):
        np.testing.assert_array_equal(shares[32][d], shares[256][d])
        assert set(np.round(shares[32][d], 12)) <= {0.6, 1.0}
    assert dense[32] > 2 * dense[256]  # the old rule's dilution this test guards against


def test_studies_with_unknown_labels_are_not_normal():
    y = np.zeros((4, len(CTRATE_FINDINGS)))
    y[2] = -1  # labels all unknown
    y[3, 0] = -1  # one unknown label: still a known (normal) study
    assert labels_known(y).tolist() == [True, True, False, True]
    w, w_t2i = report_soft_targets(y, CTRATE_FINDINGS, np.zeros((4, 4), bool), alpha=0.5)
    np.testing.assert_allclose(w.numpy()[2], [0, 0, 1, 0])
    np.testing.assert_allclose(w.numpy()[:, 2], [0, 0, 1, 0])
    np.testing.assert_allclose(w.numpy()[0], [0.5, 0.25, 0, 0.25])  # two other normal studies share 1 - alpha
    np.testing.assert_allclose(w.numpy(), w_t2i.numpy())


def reference_loss(image, text, p, q, temperature):
    """Float64 loop: mean over rows of -sum_j P_ij log softmax_j(image_i . text_j / T) (rows of P normalised), the
    same for text against images with Q, and the mean of the two directions."""
    b = image.shape[0]
    zi = [image[i] / torch.sqrt((image[i] ** 2).sum()) for i in range(b)]
    zt = [text[i] / torch.sqrt((text[i] ** 2).sum()) for i in range(b)]

    def ce(za, zb, t):
        total = 0.0
        for i in range(b):
            logits = torch.stack([(za[i] * zb[j]).sum() / temperature for j in range(b)])
            lse = torch.logsumexp(logits, 0)
            mass = sum(float(t[i][j]) for j in range(b))
            total = total - sum(float(t[i][j]) / mass * (logits[j] - lse) for j in range(b))
        return total / b

    return (ce(zi, zt, p.tolist()) + ce(zt, zi, q.tolist())) / 2


@pytest.mark.parametrize("alpha", [0.25, 0.7])
def test_loss_both_directions_with_alpha_below_one(alpha):
    g = torch.Generator().manual_seed(5)
    n = 6
    image = torch.randn(n, 4, generator=g, dtype=torch.float64)
    text = torch.randn(n, 4, generator=g, dtype=torch.float64) + image
    s = torch.rand(n, n, generator=g, dtype=torch.float64) * (torch.rand(n, n, generator=g) < 0.5)
    w, w_t2i = soft_target_pair(n, alpha=alpha, beta=1.0, spatial=s)
    assert not torch.allclose(w, w_t2i)
    x = [image.clone().requires_grad_(True), text.clone().requires_grad_(True),
         torch.tensor(0.2, dtype=torch.float64, requires_grad=True)]  # fmt: skip
    got = soft_contrastive_loss(x[0], x[1], w, x[2], targets_t2i=w_t2i)
    y = [t.detach().clone().requires_grad_(True) for t in x]
    ref = reference_loss(y[0], y[1], w, w_t2i, y[2])
    torch.testing.assert_close(got, ref.detach(), rtol=1e-12, atol=1e-12)
    for a, r in zip(torch.autograd.grad(got, x), torch.autograd.grad(ref, y), strict=True):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)
    # without targets_t2i the text-to-image direction reads the columns of W: another loss
    assert abs(soft_contrastive_loss(image, text, w, 0.2).item() - got.item()) > 1e-6
    with pytest.raises(LossInputError, match="targets_t2i"):
        soft_contrastive_loss(image, text, w, 0.2, targets_t2i=w_t2i[:3])


def test_target_arguments_are_checked():
    with pytest.raises(LossInputError, match="alpha"):
        soft_target_pair(3, alpha=1.5)
    with pytest.raises(LossInputError, match="spatial"):
        soft_target_pair(3, alpha=0.5, beta=1.0)
    with pytest.raises(LossInputError, match="known"):
        soft_target_pair(3, alpha=0.5, gamma=1.0, knowledge=np.ones((3, 3)), known=[True, False])
    np.testing.assert_array_equal(soft_target_pair(3, alpha=0.5)[0].numpy(), np.eye(3))  # no similarity: InfoNCE


# ------------------------------------------------------------------------------------------- volumetric part


def coverage(masks: dict[str, np.ndarray]) -> AnatomyCoverage:
    """Coverage of (X, Y, Z) boolean token masks laid out as one window of (X, Y, Z) spatial tokens."""
    names = list(masks)
    vol = np.stack([masks[a] for a in names], -1).astype(np.float32)  # (X, Y, Z, A)
    x, y, z, a = vol.shape
    cov = vol.reshape(1, 1, 1, x, y, z, a)
    return AnatomyCoverage(names, cov, np.zeros(a, bool), vol.reshape(-1, a).sum(0).astype(np.int64), "m", "g")


def box(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


def test_organ_profile_counts_the_abnormal_organs_in_the_organ_box():
    shape = (4, 4, 12)
    cov = coverage({"lung": box(shape, (0, 0, 0), (4, 4, 12)), "heart": box(shape, (0, 0, 6), (2, 2, 12))})
    prof = organ_profile(cov, ["heart"]).reshape(ORGAN_CELLS)
    # the box is the whole grid: x, y halves of 2 tokens, depth cells of 2 tokens; the heart fills the first
    # x / y half and the last three depth cells, 2 * 2 * 2 = 8 tokens each
    expected = np.zeros(ORGAN_CELLS)
    expected[0, 0, 3:] = 8
    np.testing.assert_array_equal(prof, expected)
    assert organ_profile(cov, []) is None and organ_profile(cov, ["aorta"]) is None
    # padding around the organs (a longer scan) does not move them in the frame
    big = {k: np.pad(v, ((0, 0), (0, 0), (6, 6))) for k, v in
           {"lung": box(shape, (0, 0, 0), (4, 4, 12)), "heart": box(shape, (0, 0, 6), (2, 2, 12))}.items()}
    np.testing.assert_array_equal(organ_profile(coverage(big), ["heart"]).reshape(ORGAN_CELLS), expected)


def test_cited_profile_frames():
    shape = (2, 2, 12)
    cov = coverage({"lung": box(shape, (0, 0, 6), (2, 2, 12))})  # organs in depth tokens 6..11
    np.testing.assert_array_equal(cited_profile([6, 11, 11], 12, cov), [1, 0, 0, 0, 0, 2])
    np.testing.assert_array_equal(cited_profile([0], 12, cov), [1, 0, 0, 0, 0, 0])  # above the organs: end bin
    np.testing.assert_array_equal(cited_profile([6, 11], 12), [0, 0, 0, 1, 0, 1])  # no segmentation: the scan
    assert cited_profile([], 12) is None
    row = volume_profile_row(None, cited_profile([6], 12))
    assert row.shape == (PROFILE_WIDTH,)
    organs, has_o, cited, has_c = split_profile_rows(row[None])
    assert not has_o[0] and has_c[0] and cited.shape == (1, CITED_BINS) and cited[0, 3] == 1


def test_profile_overlap_and_the_mixed_spatial_term():
    p = np.array([[2.0, 0, 2], [1, 1, 0], [0, 0, 0]])
    ov = profile_overlap(p)
    # p0 = (.5, 0, .5), p1 = (.5, .5, 0): min sum .5, max sum 1.5
    assert ov[0, 1] == pytest.approx(1 / 3) and ov[0, 0] == 1 and ov[2, 2] == 0 and ov[0, 2] == 0
    flags = np.array([[1, 0], [1, 0], [0, 1]], bool)
    vol = VolumeProfiles(organs=p, has_organs=[True, True, False], cited=np.ones((3, 2)),
                         has_cited=[False, False, False])  # fmt: skip
    s = spatial_similarity(flags, volume=vol, volume_weight=0.4)
    assert s[0, 1] == pytest.approx(0.6 * 1.0 + 0.4 / 3)  # both have organ profiles
    assert s[0, 2] == 0.0 and s[1, 2] == 0.0  # study 2 has no volumetric part: the report-only Jaccard
    np.testing.assert_array_equal(spatial_similarity(flags, volume=vol, volume_weight=0.0), spatial_similarity(flags))
    vol2 = VolumeProfiles(organs=p, has_organs=[True, True, True], cited=np.array([[1.0, 0], [1, 0], [0, 1]]),
                          has_cited=[True, True, False])  # fmt: skip
    v, has = vol2.similarity()
    assert v[0, 1] == pytest.approx((1 / 3 + 1) / 2) and v[0, 2] == 0 and has.all()
    with pytest.raises(LossInputError, match="volume_weight"):
        spatial_similarity(flags, volume=vol, volume_weight=1.5)


def test_swca_volume_field_reads_organ_masks_and_cited_cells():
    from types import SimpleNamespace

    from radfinder.data.records import StudyRecord
    from radfinder.train.data import Snippet
    from radfinder.train.fields import FieldContext, check_batch_fields, provide
    from radfinder.train.swca_fields import swca_volume  # noqa: F401  (registers the field)

    shape = (2, 2, 12)
    cov = coverage({"lung": box(shape, (0, 0, 0), (2, 2, 12)), "heart": box(shape, (0, 0, 0), (1, 1, 6)),
                    "esophagus": box(shape, (1, 1, 0), (2, 2, 12)), "aorta": box(shape, (1, 0, 0), (2, 1, 12))})
    rec = StudyRecord("s1", "x.nii.gz", "r1", "Cardiomegaly is present. The lungs are clear.", "Cardiomegaly.",
                      "p1", "train", "toy")  # fmt: skip
    src = SimpleNamespace(snippets={"s1": [Snippet("heart", 2), Snippet("heart", 3)]})
    fr = SimpleNamespace(meta={}, anatomy=cov, n_depth_cells=12)

    def row(features, mirrored=False):
        return SimpleNamespace(source=0, train_source=src, record=rec, sample_index=0, features=features,
                               depth_map=lambda c: c, mirrored_lr=mirrored)  # fmt: skip

    assert check_batch_fields(["labels", "swca_volume"]) == ["swca_volume"]
    ctx = FieldContext(0, tuple(CTRATE_FINDINGS))
    out = provide(["swca_volume"], [row(fr), row(SimpleNamespace(meta={}, anatomy=None, n_depth_cells=12)),
                                    row(fr, mirrored=True)], ctx)["swca_volume"]  # fmt: skip
    organs, has_o, cited, has_c = split_profile_rows(out.numpy())
    assert has_o.tolist() == [True, False, False] and has_c.all()
    np.testing.assert_array_equal(organs[0], organ_profile(cov, ["heart"]))  # the report calls the heart abnormal
    np.testing.assert_array_equal(cited[0], [0, 2, 0, 0, 0, 0])
    np.testing.assert_array_equal(cited[1], cited[0])  # organ box = whole grid here, as without a segmentation
