"""Lung and pleural findings. Each returns the lesions it creates and the paint operations that show them.

HU targets follow what a radiologist sees on a lung window: nodules and consolidation at soft-tissue density,
ground glass around -500, emphysema holes near -1000, effusions at water density in the dependent pleura.
"""

from __future__ import annotations

import numpy as np

from .anatomy import Anatomy
from .canvas import AIRWAY, LUNG_L, LUNG_R, VESSEL, ellipsoid_weight, lattice_sample, segment_distance, soft
from .lesion import Lesion, Op, box_of, inside_point

LUNG = (LUNG_R, LUNG_L)
SIDES = {LUNG_R: "right", LUNG_L: "left"}


def lung_point(rng, A: Anatomy, side=None, margin=5.0, zlo=-np.inf, zhi=np.inf, posterior=None, tries=400):
    """A random point at least ``margin`` mm inside one lung (optionally restricted in z / front-back)."""
    lo = np.array([A.bx - A.a, A.by - A.b_post, max(A.z_dome_l - 60, zlo)])
    hi = np.array([A.bx + A.a, A.by + A.b_ant, min(A.z_apex, zhi)])
    for _ in range(tries):
        p = rng.uniform(lo, hi, size=(64, 3))
        if posterior is not None:
            p = p[(p[:, 1] < A.by) == posterior]
        s = A.lung_side(p[:, 0], p[:, 1], p[:, 2])
        ok = s > 0 if side is None else s == side
        for d in np.vstack([np.eye(3), -np.eye(3)]) * margin:
            q = p + d
            ok &= A.lung_side(q[:, 0], q[:, 1], q[:, 2]) == s
        if ok.any():
            i = int(np.argmax(ok))
            return p[i], int(s[i])
    raise RuntimeError("could not place a point in the lung")  # anatomy sampling guarantees roomy lungs


def _lung_mask(A: Anatomy, side=None):
    def m(X, Y, Z):
        s = A.lung_side(X, Y, Z)
        return (s > 0) if side is None else (s == side)

    return m


def nodule(rng, A: Anatomy):
    n = int(rng.choice([1, 1, 1, 2, 3]))
    lesions, ops = [], []
    for _ in range(n):
        d = float(np.clip(rng.lognormal(np.log(11), 0.4), 6, 30))
        c, side = lung_point(rng, A, margin=d / 2 + 4)
        radii = d / 2 * rng.uniform(0.85, 1.15, 3)
        subsolid = rng.random() < 0.15
        val = rng.uniform(-520, -380) if subsolid else rng.uniform(15, 60)
        lo, hi = box_of(c, radii.max() + 3)
        ops.append(
            Op(
                lo,
                hi,
                lambda X, Y, Z, c=c, r=radii: ellipsoid_weight(X, Y, Z, c, r, None, 1.2),
                val,
                confine=LUNG + (VESSEL,),
            )
        )
        lesions.append(
            Lesion(
                "Lung nodule",
                c,
                lo + 3,
                hi - 3,
                SIDES[side],
                A.lobe(c),
                d,
                kind="ground-glass" if subsolid else "solid",
            )
        )
    return lesions, ops


def _blob(
    rng,
    A,
    finding,
    size,
    value,
    confine,
    side=None,
    zlo=-np.inf,
    zhi=np.inf,
    posterior=None,
    kind=None,
    soft_mm=2.0,
    clip_to_lung=True,
):
    """An irregular (two-ellipsoid) patch clipped to one lung."""
    c, s = lung_point(rng, A, side=side, margin=size * 0.3, zlo=zlo, zhi=zhi, posterior=posterior)
    r1 = size / 2 * rng.uniform(0.7, 1.2, 3)
    c2 = c + rng.normal(0, size * 0.2, 3)
    r2 = size / 2 * rng.uniform(0.5, 0.9, 3)
    lung = _lung_mask(A, s)

    def mask(X, Y, Z):
        w = np.maximum(
            ellipsoid_weight(X, Y, Z, c, r1, None, soft_mm), ellipsoid_weight(X, Y, Z, c2, r2, None, soft_mm)
        )
        return w * lung(X, Y, Z) if clip_to_lung else w

    lo, hi = box_of(c, size)
    got = inside_point(mask, lo, hi)
    if got is None:
        return [], []
    centre, blo, bhi = got
    les = Lesion(finding, centre, blo, bhi, SIDES[s], A.lobe(centre), float(size), kind=kind)
    return [les], [Op(lo, hi, mask, value, confine=confine)]


def consolidation(rng, A: Anatomy):
    size = rng.uniform(35, 75)
    les, ops = _blob(
        rng,
        A,
        "Consolidation",
        size,
        rng.uniform(20, 45),
        LUNG + (VESSEL,),
        zhi=A.zc + 10 if rng.random() < 0.7 else np.inf,
    )
    for x in les:
        x.severity = "lobar" if size > 60 else "segmental"
    return les, ops


def opacity(rng, A: Anatomy):
    lesions, ops = [], []
    for _ in range(int(rng.choice([1, 2, 2, 3]))):
        les, o = _blob(
            rng, A, "Lung opacity", rng.uniform(25, 60), rng.uniform(-560, -420), LUNG, kind="ground-glass", soft_mm=6.0
        )
        lesions += les
        ops += o
    return lesions, ops


def atelectasis(rng, A: Anatomy):
    if rng.random() < 0.5:  # plate-like (subsegmental) band at the base
        c, s = lung_point(rng, A, margin=8, zhi=A.zc - 40)
        ang = rng.uniform(-0.4, 0.4)
        rot = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1.0]])
        r = np.array([rng.uniform(22, 35), rng.uniform(15, 25), rng.uniform(2.5, 4)])
        lung = _lung_mask(A, s)
        mask = lambda X, Y, Z: ellipsoid_weight(X, Y, Z, c, r, rot, 1.0) * lung(X, Y, Z)  # noqa: E731
        kind = "plate-like"
    else:  # dependent, posterior basal
        c, s = lung_point(rng, A, margin=6, zhi=A.z_dome_r + 40, posterior=True)
        c = c + np.array([0, -8.0, 0])
        r = np.array([rng.uniform(25, 40), rng.uniform(12, 20), rng.uniform(15, 25)])
        lung = _lung_mask(A, s)
        mask = lambda X, Y, Z: ellipsoid_weight(X, Y, Z, c, r, None, 3.0) * lung(X, Y, Z)  # noqa: E731
        kind = "dependent"
    lo, hi = box_of(c, r.max() + 4)
    got = inside_point(mask, lo, hi, step=2.0)
    if got is None:
        return [], []
    centre, blo, bhi = got
    les = Lesion("Atelectasis", centre, blo, bhi, SIDES[s], A.lobe(centre), float(2 * r[:2].max()), kind=kind)
    return [les], [Op(lo, hi, mask, rng.uniform(-20, 30), confine=LUNG + (VESSEL,))]


def pleural_effusion(rng, A: Anatomy):
    sides = [LUNG_R, LUNG_L] if rng.random() < 0.5 else [int(rng.choice([LUNG_R, LUNG_L]))]
    sev = str(rng.choice(["small", "moderate", "large"], p=[0.45, 0.4, 0.15]))
    depth = {"small": (22, 32), "moderate": (35, 55), "large": (60, 85)}[sev]
    floor = A.by - A.b_post * 1.05 + A.fat + A.muscle + 9.0
    lesions, ops = [], []
    for s in sides:
        h = rng.uniform(*depth)
        top = (A.z_dome_r if s == LUNG_R else A.z_dome_l) + h * 1.6
        lung = _lung_mask(A, s)
        low = A.z_dome_l - 80

        def mask(X, Y, Z, h=h, top=top, lung=lung, low=low):
            lvl = floor + h * np.clip((top - Z) / (top - low) * 2.5, 0, 1) ** 0.5
            return soft(lvl - Y, 2.0) * lung(X, Y, Z)

        lo = np.array([A.bx - A.a, floor - 5, low])
        hi = np.array([A.bx + A.a, floor + h + 10, top + 5])
        got = inside_point(mask, lo, hi)
        if got is None:
            continue
        centre, blo, bhi = got
        lesions.append(
            Lesion("Pleural effusion", centre, blo, bhi, SIDES[s], f"{SIDES[s]} pleural space", float(h), severity=sev)
        )
        ops.append(Op(lo, hi, mask, rng.uniform(2, 18), confine=LUNG + (VESSEL, AIRWAY)))
    if len(lesions) == 2:
        for x in lesions:
            x.extra["bilateral"] = True
    return lesions, ops


def _zone_lesion(rng, A, finding, mask, zlo, zhi, kind=None, severity=None, side=None):
    lo = np.array([A.bx - A.a, A.by - A.b_post, zlo])
    hi = np.array([A.bx + A.a, A.by + A.b_ant, zhi])
    got = inside_point(mask, lo, hi, step=4.0)
    if got is None:
        return None, lo, hi
    centre, blo, bhi = got
    return Lesion(finding, centre, blo, bhi, side, A.lobe(centre), None, severity=severity, kind=kind), lo, hi


def emphysema(rng, A: Anatomy):
    sev = str(rng.choice(["mild", "moderate", "severe"], p=[0.4, 0.4, 0.2]))
    thr = {"mild": 0.9, "moderate": 0.55, "severe": 0.25}[sev]
    step = 4.0
    origin = np.array([A.bx - A.a, A.by - A.b_post, A.z_dome_l - 80])
    n = np.ceil(np.array([2 * A.a, A.b_ant + A.b_post, A.z_apex - A.z_dome_l + 100]) / step).astype(int) + 2
    field = rng.standard_normal(n).astype(np.float32)
    upper = rng.random() < 0.75  # centrilobular: upper-zone predominant; otherwise panlobular, lower zones
    zlo, zhi = (A.zc - 30, A.z_apex) if upper else (A.z_dome_l - 60, A.zc)
    lung = _lung_mask(A)

    def mask(X, Y, Z):
        f = lattice_sample(field, origin, step, X, Y, Z)
        return np.clip((f - thr) * 3.0, 0, 1) * lung(X, Y, Z) * ((Z > zlo) & (Z < zhi))

    les, lo, hi = _zone_lesion(
        rng,
        A,
        "Emphysema",
        mask,
        zlo,
        zhi,
        kind="centrilobular" if upper else "panlobular",
        severity=sev,
        side="bilateral",
    )
    les.location = "upper lobes" if upper else "lower lobes"
    return [les], [Op(lo, hi, mask, rng.uniform(-1000, -975), confine=LUNG)]


def mosaic(rng, A: Anatomy):
    step = 9.0
    origin = np.array([A.bx - A.a, A.by - A.b_post, A.z_dome_l - 80])
    n = np.ceil(np.array([2 * A.a, A.b_ant + A.b_post, A.z_apex - A.z_dome_l + 100]) / step).astype(int) + 2
    field = rng.standard_normal(n).astype(np.float32)
    zlo, zhi = A.z_dome_l - 60, A.zc + 40
    lung = _lung_mask(A)

    def mask(X, Y, Z):
        f = lattice_sample(field, origin, step, X, Y, Z)
        return np.clip(f * 4.0, -1, 1) * lung(X, Y, Z) * ((Z > zlo) & (Z < zhi))

    def dark(X, Y, Z):
        return np.clip(mask(X, Y, Z), 0, 1)

    les, lo, hi = _zone_lesion(rng, A, "Mosaic attenuation pattern", dark, zlo, zhi, side="bilateral")
    les.location = "both lungs"
    # Geographic lobules darker (air trapping / hypoperfusion) beside denser ones: +/- about 90 HU.
    return [les], [Op(lo, hi, mask, delta=-float(rng.uniform(80, 110)), confine=LUNG)]


def septal(rng, A: Anatomy):
    step = 6.0
    origin = np.array([A.bx - A.a, A.by - A.b_post, A.z_dome_l - 80])
    n = np.ceil(np.array([2 * A.a, A.b_ant + A.b_post, A.z_apex - A.z_dome_l + 100]) / step).astype(int) + 2
    field = rng.standard_normal(n).astype(np.float32)
    zlo, zhi = A.z_dome_l - 60, A.zc + rng.uniform(-10, 50)
    lung = _lung_mask(A)

    def mask(X, Y, Z):
        # Zero crossings of a smooth random field form a closed polygonal network, like secondary lobules.
        f = lattice_sample(field, origin, step, X, Y, Z)
        line = np.clip(1.0 - np.abs(f) / 0.22, 0, 1)
        periph = np.clip((45.0 - A.cavity_depth(X, Y, Z)) / 15.0, 0, 1)
        return line * periph * lung(X, Y, Z) * ((Z > zlo) & (Z < zhi))

    les, lo, hi = _zone_lesion(rng, A, "Interlobular septal thickening", mask, zlo, zhi, side="bilateral")
    les.location = "subpleural lower zones"
    return [les], [Op(lo, hi, mask, rng.uniform(-250, -100), confine=LUNG)]


def fibrotic(rng, A: Anatomy):
    apical = rng.random() < 0.5
    c, s = lung_point(rng, A, margin=10, zlo=A.zc + 20 if apical else -np.inf, zhi=np.inf if apical else A.zc)
    segs = []
    for _ in range(int(rng.integers(3, 7))):
        p0 = c + rng.normal(0, 8, 3)
        d = rng.normal(0, 1, 3)
        p1 = p0 + d / np.linalg.norm(d) * rng.uniform(18, 40)
        segs.append((p0, p1, rng.uniform(1.3, 2.4)))
    lung = _lung_mask(A, s)

    def mask(X, Y, Z):
        w = np.zeros(np.broadcast_shapes(X.shape, Y.shape, Z.shape), np.float32)
        for p0, p1, r in segs:
            w = np.maximum(w, soft(r - segment_distance(X, Y, Z, p0, p1), 1.0))
        return w * lung(X, Y, Z)

    lo, hi = box_of(c, 55)
    got = inside_point(mask, lo, hi, step=1.5)
    if got is None:
        return [], []
    centre, blo, bhi = got
    les = Lesion(
        "Pulmonary fibrotic sequela",
        centre,
        blo,
        bhi,
        SIDES[s],
        A.lobe(centre),
        None,
        kind="apical scarring" if apical else "fibrotic bands",
    )
    return [les], [Op(lo, hi, mask, rng.uniform(-80, 40), confine=LUNG + (VESSEL,))]


def _airways_in(A: Anatomy, side: int, zhi: float):
    return [
        (p0, p1, r)
        for p0, p1, r in A.airways[1:]
        if r < 6 and (p0[0] - A.bx) * (1 if side == LUNG_R else -1) > 0 and (p0[2] + p1[2]) / 2 < zhi
    ]


def bronchiectasis(rng, A: Anatomy):
    side = int(rng.choice([LUNG_R, LUNG_L]))
    segs = _airways_in(A, side, A.zc - 10)
    if not segs:
        segs = _airways_in(A, side, np.inf)
    segs = sorted(segs, key=lambda s: -s[2])[: int(rng.integers(4, 9))]
    f = rng.uniform(2.0, 2.8)
    dil = [(p0, p1, max(r * f, 4.0)) for p0, p1, r in segs]
    lung = _lung_mask(A, side)

    def wall(X, Y, Z):
        d = np.min([segment_distance(X, Y, Z, p0, p1) - r for p0, p1, r in dil], axis=0)
        return soft(2.0 - d, 1.0) * lung(X, Y, Z)

    def lumen(X, Y, Z):
        d = np.min([segment_distance(X, Y, Z, p0, p1) - r for p0, p1, r in dil], axis=0)
        return soft(-d, 1.0)

    lo = np.min([np.minimum(p0, p1) - r - 4 for p0, p1, r in dil], 0)
    hi = np.max([np.maximum(p0, p1) + r + 4 for p0, p1, r in dil], 0)
    p0, p1, r = dil[0]
    centre = (p0 + p1) / 2
    les = Lesion(
        "Bronchiectasis",
        centre,
        lo + 4,
        hi - 4,
        SIDES[side],
        A.lobe(centre),
        float(2 * r),
        kind=str(rng.choice(["cylindrical", "varicose"])),
    )
    return [les], [Op(lo, hi, wall, 35.0, confine=LUNG + (VESSEL,)), Op(lo, hi, lumen, -1000.0, label=AIRWAY)]


def peribronchial(rng, A: Anatomy):
    A.bronchial_wall = float(rng.uniform(2.6, 3.6))
    side = int(rng.choice([LUNG_R, LUNG_L]))
    segs = sorted(_airways_in(A, side, np.inf), key=lambda s: -s[2])
    p0, p1, r = segs[min(2, len(segs) - 1)]
    d = p1 - p0
    n = np.cross(d, [0, 0, 1.0])
    n /= np.linalg.norm(n) + 1e-9
    wall = max(1.2, 0.25 * r) * A.bronchial_wall
    centre = (p0 + p1) / 2 + n * (r + wall / 2)
    lo = np.min([np.minimum(a, b) - rr for a, b, rr in segs], 0)
    hi = np.max([np.maximum(a, b) + rr for a, b, rr in segs], 0)
    les = Lesion(
        "Peribronchial thickening",
        centre,
        lo,
        hi,
        "bilateral",
        A.lobe(centre),
        None,
        severity="marked" if A.bronchial_wall > 3.1 else "mild",
    )
    return [les], []
