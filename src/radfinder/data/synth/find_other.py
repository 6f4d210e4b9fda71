"""Heart, vessel, mediastinal and device findings. Those that change anatomy (heart size, pericardial fluid)
edit the ``Anatomy`` and must run before it is rendered; the rest return paint operations."""

from __future__ import annotations

import numpy as np

from .anatomy import Anatomy
from .canvas import BODY, HEART, LIVER, VESSEL, ellipsoid_weight, segment_distance, soft
from .lesion import Lesion, Op, box_of

SOFT_TISSUE = (BODY, HEART, VESSEL, LIVER)


def _sphere_op(c, r, value, confine=None, edge=1.0, label=None):
    lo, hi = box_of(c, np.max(r) + 2)
    return Op(
        lo,
        hi,
        lambda X, Y, Z: ellipsoid_weight(X, Y, Z, c, np.broadcast_to(r, (3,)), None, edge),
        value,
        confine=confine,
        label=label,
    )


def cardiomegaly(rng, A: Anatomy):
    f = rng.uniform(1.28, 1.45)
    A.heart_r = A.heart_r * f
    A.heart_c = A.heart_c + np.array([-(f - 1) * 25.0, 0.0, (f - 1) * 10.0])  # grows mostly to the left
    ctr = round(float(rng.uniform(0.56, 0.68)), 2)
    lo, hi = box_of(A.heart_c, A.heart_r.max())
    les = Lesion(
        "Cardiomegaly",
        A.heart_c.copy(),
        lo,
        hi,
        None,
        "heart",
        float(2 * A.heart_r[0]),
        severity="mild" if f < 1.35 else "moderate",
        extra={"ctr": ctr},
    )
    return [les], []


def pericardial_effusion(rng, A: Anatomy):
    t = float(rng.uniform(9, 20))
    A.pericardial_fluid = t
    ry = A.heart_r[1] + 2.5 + t * 0.5  # middle of the fluid rim, behind the ventricles
    centre = A.heart_c + A.heart_rot @ np.array([0.0, -ry, 0.0])
    lo, hi = box_of(A.heart_c, A.heart_r.max() + 2.5 + t)
    sev = "small" if t < 12 else "moderate"
    return [Lesion("Pericardial effusion", centre, lo, hi, None, "pericardium", t, severity=sev)], []


def _wall_plaques(rng, segs, n, hu):
    pts = []
    for _ in range(n):
        p0, p1, r = segs[int(rng.integers(len(segs)))]
        d = p1 - p0
        q = p0 + d * rng.uniform(0.1, 0.9)
        v = np.cross(d, rng.normal(size=3))
        v /= np.linalg.norm(v) + 1e-9
        pts.append((q + v * (r - 1.0), rng.uniform(2.0, 3.8), rng.uniform(*hu)))
    return pts


def arterial_calcification(rng, A: Anatomy):
    n = int(rng.integers(4, 12))
    plaques = _wall_plaques(rng, A.aorta[1:], n, (550, 1100))
    plaques.sort(key=lambda p: -p[1])
    ops = [_sphere_op(c, np.array([r, r, r * 1.6]), v) for c, r, v in plaques]
    pts = np.array([c for c, _, _ in plaques])
    les = Lesion(
        "Arterial wall calcification",
        plaques[0][0],
        pts.min(0) - 3,
        pts.max(0) + 3,
        None,
        "aortic arch" if plaques[0][0][2] > A.zc else "descending aorta",
        None,
        count=n,
        severity=str(rng.choice(["mild", "moderate", "extensive"])),
    )
    return [les], ops


def coronary_calcification(rng, A: Anatomy):
    vessels = {
        "LAD": (np.pi * 0.45, (-0.7, 0.25)),
        "RCA": (np.pi * 1.05, (-0.8, -0.35)),
        "LCx": (-np.pi * 0.05, (-0.8, -0.35)),
    }
    chosen = rng.choice(list(vessels), size=int(rng.integers(1, 4)), replace=False)
    plaques, names = [], []
    for name in chosen:
        ang, (u0, u1) = vessels[str(name)]
        for _ in range(int(rng.integers(2, 5))):
            u = rng.uniform(u0, u1)
            a = ang + rng.normal(0, 0.12)
            local = (
                np.array([u * A.heart_r[0], np.cos(a) * A.heart_r[1], np.sin(a) * A.heart_r[2]])
                * np.sqrt([1.0, 1 - u * u, 1 - u * u])
                * 1.0
            )
            plaques.append((A.heart_c + A.heart_rot @ local, rng.uniform(1.8, 3.2), rng.uniform(500, 1100)))
            names.append(str(name))
    ops = [_sphere_op(c, r, v) for c, r, v in plaques]
    pts = np.array([c for c, _, _ in plaques])
    biggest = int(np.argmax([r for _, r, _ in plaques]))
    les = Lesion(
        "Coronary artery wall calcification",
        plaques[biggest][0],
        pts.min(0) - 3,
        pts.max(0) + 3,
        None,
        names[biggest],
        None,
        count=len(plaques),
        extra={"vessels": sorted(set(names))},
        severity=str(rng.choice(["mild", "moderate", "severe"])),
    )
    return [les], ops


def hiatal_hernia(rng, A: Anatomy):
    c = np.array([A.bx - rng.uniform(5, 18), A.y_spine + rng.uniform(24, 34), A.z_dome_l + rng.uniform(5, 25)])
    r = np.array([rng.uniform(18, 32), rng.uniform(15, 24), rng.uniform(18, 32)])
    level = c[2] + rng.uniform(-0.3, 0.3) * r[2]  # air-fluid level
    inner = r - 3.0
    lo, hi = box_of(c, r.max() + 2)
    ops = [
        Op(lo, hi, lambda X, Y, Z: ellipsoid_weight(X, Y, Z, c, r, None, 1.0), 40.0),
        Op(lo, hi, lambda X, Y, Z: ellipsoid_weight(X, Y, Z, c, inner, None, 1.0) * (Z > level), -1000.0),
        Op(lo, hi, lambda X, Y, Z: ellipsoid_weight(X, Y, Z, c, inner, None, 1.0) * (Z <= level), 15.0),
    ]
    kind = "small" if r.max() < 25 else "large"
    return [Lesion("Hiatal hernia", c, c - r, c + r, None, "hiatus", float(2 * r.max()), kind=kind)], ops


def lymphadenopathy(rng, A: Anatomy):
    stations = {
        "subcarinal": np.array([A.bx - 3, A.y_spine + 22, A.zc - 18]),
        "right paratracheal": np.array([A.bx + 16, A.y_spine + 48, A.zc + 22]),
        "aortopulmonary window": np.array([A.bx - 24, A.y_spine + 46, A.zc + 4]),
        "right hilar": np.array([A.bx + 52, A.y_spine + 40, A.zc - 22]),
        "left hilar": np.array([A.bx - 50, A.y_spine + 38, A.zc - 18]),
        "prevascular": np.array([A.bx + 2, A.by + A.b_ant - A.fat - A.muscle - 28, A.zc + 12]),
        "right axillary": np.array([A.bx + A.a - A.fat - 10, A.by + 10, A.zc + 35]),
        "left axillary": np.array([A.bx - A.a + A.fat + 10, A.by + 10, A.zc + 35]),
    }
    names = rng.choice(list(stations), size=int(rng.choice([1, 1, 2, 3])), replace=False)
    lesions, ops = [], []
    for name in names:
        c = stations[str(name)] + rng.normal(0, 3, 3)
        short = rng.uniform(13, 26)
        r = np.array([short / 2, short / 2 * rng.uniform(1.0, 1.3), short / 2 * rng.uniform(1.2, 1.8)])
        ops.append(_sphere_op(c, r, rng.uniform(30, 48)))
        side = "right" if "right" in name else "left" if "left" in name else None
        lesions.append(Lesion("Lymphadenopathy", c, c - r, c + r, side, str(name), float(short)))
    return lesions, ops


def medical_material(rng, A: Anatomy):
    kind = str(
        rng.choice(
            ["port catheter", "pacemaker", "central venous catheter", "sternotomy wires"], p=[0.35, 0.25, 0.25, 0.15]
        )
    )
    sign = 1.0 if kind != "pacemaker" and rng.random() < 0.7 else -1.0
    wall_y = A.by + A.b_ant * 0.85 - max(8.0, 0.6 * A.fat)  # in the subcutaneous fat
    pocket = np.array([A.bx + sign * A.a * 0.45, wall_y, A.zc + rng.uniform(45, 70)])
    svc_top = A.great_vessels[1][0]
    heart_in = A.heart_c + A.heart_rot @ np.array([A.heart_r[0] * 0.3, A.heart_r[1] * 0.4, 0.0])
    ops, parts = [], []
    if kind in ("port catheter", "pacemaker"):
        r = np.array([12.0, 6.0, 12.0]) if kind == "port catheter" else np.array([22.0, 5.0, 18.0])
        ops.append(_sphere_op(pocket, r, 2500.0))
        parts.append(pocket)
        path = [pocket, svc_top, A.great_vessels[1][1]] + ([heart_in] if kind == "pacemaker" else [])
        centre = pocket
    elif kind == "central venous catheter":
        neck = svc_top + np.array([sign * 15.0, 5.0, 90.0])
        path = [neck, svc_top, A.great_vessels[1][1]]
        centre = (svc_top + A.great_vessels[1][1]) / 2
    else:
        path = []
        for k in range(int(rng.integers(4, 7))):
            c = np.array([A.bx, A.by + A.b_ant - A.fat - A.muscle - 6, A.zc + 40 - k * 22.0])
            ops.append(_sphere_op(c, np.array([9.0, 2.0, 1.5]), 2800.0))
            parts.append(c)
        centre = parts[len(parts) // 2]
    for p0, p1 in zip(path[:-1], path[1:], strict=False):
        lo, hi = np.minimum(p0, p1) - 4, np.maximum(p0, p1) + 4
        ops.append(Op(lo, hi, lambda X, Y, Z, p0=p0, p1=p1: soft(1.6 - segment_distance(X, Y, Z, p0, p1), 1.0), 1800.0))
        parts += [p0, p1]
    pts = np.array(parts)
    side = None if kind == "sternotomy wires" else ("right" if centre[0] > A.bx else "left")
    return [
        Lesion(
            "Medical material", np.asarray(centre, float), pts.min(0) - 5, pts.max(0) + 5, side, kind, None, kind=kind
        )
    ], ops
