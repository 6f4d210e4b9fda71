"""Randomised chest anatomy in world RAS mm, and its rendering into HU.

Frame: +x patient right, +y anterior, +z superior. ``zc`` is the carina. The cross-section is a stack of
elliptic layers (skin/fat, muscle, rib cage, pleural cavity); lungs are the cavity minus the mediastinum, above
the diaphragm domes and below the apices. Every membership test is a pure numpy function of world coordinates,
so findings can reuse them (an effusion fills the lung, a nodule must sit in it) and rendering can be chunked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import segmentation as SEG
from .canvas import (
    AIRWAY,
    BODY,
    BONE,
    HEART,
    LIVER,
    LUNG_L,
    LUNG_R,
    VESSEL,
    Canvas,
    ellipsoid_weight,
    paint_capsule,
    soft,
)
from .trees import Segment, grow, offset_tree


@dataclass
class Anatomy:
    bx: float
    by: float
    a: float  # body half-width (LR)
    b_ant: float  # body half-depth anterior of the centre
    b_post: float
    fat: float
    muscle: float
    zc: float  # carina
    z_apex: float
    z_dome_r: float
    z_dome_l: float
    y_spine: float  # vertebral body centre
    heart_c: np.ndarray
    heart_r: np.ndarray
    heart_rot: np.ndarray
    rib_spacing: float
    rib_drop: float
    rib_phase: float
    lung_hu: float
    fat_hu: float
    aorta: list[Segment] = field(default_factory=list)
    great_vessels: list[Segment] = field(default_factory=list)
    esophagus: list[Segment] = field(default_factory=list)
    airways: list[Segment] = field(default_factory=list)
    arteries: list[Segment] = field(default_factory=list)
    veins: list[Segment] = field(default_factory=list)
    # Set by findings before rendering: these alter anatomy rather than add to it.
    pericardial_fluid: float = 0.0
    bronchial_wall: float = 1.0
    pa_bif: np.ndarray | None = None  # pulmonary artery bifurcation, root of the artery trees

    # ---- cross-section -------------------------------------------------------------------------------
    def body_scale(self, Z):
        # The trunk widens a little toward the abdomen and narrows toward the shoulders/neck above the apex.
        return np.clip(1.0 + 0.0007 * (self.zc - Z), 0.9, 1.12) * np.clip(1.0 - 0.002 * (Z - self.z_apex), 0.9, 1.0)

    def ellipse_depth(self, X, Y, Z, inset):
        """Signed distance-like depth (mm, positive inside) of a body ellipse shrunk by ``inset`` mm."""
        # Only (x, y) and z vary separately, so the per-axis factors stay small and float32 (this runs over the
        # whole volume several times per study).
        s = self.body_scale(Z).astype(np.float32)
        a = np.float32(self.a) * s - np.float32(inset)
        b = np.where(Y > self.by, np.float32(self.b_ant), np.float32(self.b_post)).astype(np.float32) * s - np.float32(
            inset
        )
        rho = np.sqrt(((X - np.float32(self.bx)) / a) ** 2 + ((Y - np.float32(self.by)) / b) ** 2)
        return (1.0 - rho) * np.minimum(a, b)

    def cavity_depth(self, X, Y, Z):
        return self.ellipse_depth(X, Y, Z, self.fat + self.muscle + 9.0)

    def dome(self, X, Y):
        """Height of the diaphragm surface; the right dome sits higher, the posterior recesses lowest."""
        right = X > self.bx
        top = np.where(right, self.z_dome_r, self.z_dome_l)
        cx = self.bx + np.where(right, 0.45, -0.45) * self.a
        return (
            top
            - 55.0 * ((X - cx) / (0.75 * self.a)) ** 2
            - 45.0 * ((Y - self.by - 0.15 * self.b_ant) / self.b_post) ** 2
        )

    def lung_side(self, X, Y, Z):
        """0 outside the lungs, LUNG_R or LUNG_L inside."""
        inside = self.cavity_depth(X, Y, Z) > 2.0
        inside &= Z > self.dome(X, Y)
        # Apical taper: above the top of the aortic arch each lung shrinks toward a point at the apex.
        t = np.clip((self.z_apex - Z) / max(self.z_apex - self.zc - 25.0, 10.0), 0.0, 1.0)
        span = t**0.65
        lx = self.bx + np.sign(X - self.bx) * 0.5 * self.a
        ly = self.by - 0.2 * self.b_post
        inside &= ((X - lx) / (0.55 * self.a * span + 1e-3)) ** 2 + (
            (Y - ly) / (0.8 * self.b_post * span + 1e-3)
        ) ** 2 < 1
        # Mediastinum: a midline band, wider in front of the spine and at heart level.
        half = 20.0 + 12.0 * np.clip((Y - self.y_spine) / 70.0, 0, 1) + 6.0 * np.clip((self.zc - Z) / 60.0, 0, 1)
        inside &= np.abs(X - self.bx) > half
        inside &= (
            ellipsoid_weight(X, Y, Z, self.heart_c, self.heart_r + 5.0 + self.pericardial_fluid, self.heart_rot, 1.0)
            < 0.5
        )
        return np.where(inside, np.where(X > self.bx, LUNG_R, LUNG_L), 0).astype(np.uint8)

    def lobe_parts(self, X, Y, Z):
        """(right, lower, middle-or-lingula) booleans of lung points: the oblique fissure descends anteriorly,
        the horizontal fissure on the right (and the lingula on the left) sits below the carina, anteriorly."""
        right = X > self.bx
        lower = Z < self.zc + 25.0 - 0.9 * (Y - (self.y_spine - 10.0))
        middle = np.where(right, (Z < self.zc - 20.0) & (Y > self.by - 10), (Z < self.zc - 25.0) & (Y > self.by))
        return right, lower, middle

    def lobe(self, p) -> str:
        """Lobe of a lung point (see `lobe_parts`)."""
        right, lower, middle = (bool(v) for v in self.lobe_parts(*(np.asarray(c) for c in p)))
        if right:
            return "right lower lobe" if lower else ("right middle lobe" if middle else "right upper lobe")
        return "left lower lobe" if lower else ("lingula" if middle else "left upper lobe")


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    u = rng.uniform
    a = u(140, 178)
    b_ant = u(95, 122)
    b_post = b_ant * u(1.0, 1.1)
    fat = u(6, 30)
    muscle = u(8, 16)
    zc = u(-350.0, 80.0)
    lung_h = u(175, 245)  # apex to right dome
    z_apex = zc + u(0.38, 0.46) * lung_h
    z_dome_r = z_apex - lung_h
    z_dome_l = z_dome_r - u(8, 25)
    by = u(-15, 15)
    bx = u(-10, 10)
    y_spine = by - b_post + fat + muscle + u(38, 48)
    hscale = u(0.92, 1.05)
    heart_r = np.array([58.0, 44.0, 46.0]) * hscale
    heart_c = np.array([bx - u(10, 22), by + 0.15 * b_ant + u(0, 10), z_dome_r + u(32, 45)])
    ang = np.deg2rad(u(30, 50))  # long axis turned toward the left and anterior
    tilt = np.deg2rad(u(15, 30))  # and down toward the apex
    rz = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
    rx = np.array([[np.cos(tilt), 0, np.sin(tilt)], [0, 1, 0], [-np.sin(tilt), 0, np.cos(tilt)]])
    # Columns are the heart axes; the first points from the base toward the apex (left, anterior, inferior).
    heart_rot = rz @ rx @ np.diag([-1.0, 1.0, 1.0])
    A = Anatomy(
        bx=bx,
        by=by,
        a=a,
        b_ant=b_ant,
        b_post=b_post,
        fat=fat,
        muscle=muscle,
        zc=zc,
        z_apex=z_apex,
        z_dome_r=z_dome_r,
        z_dome_l=z_dome_l,
        y_spine=y_spine,
        heart_c=heart_c,
        heart_r=heart_r,
        heart_rot=heart_rot,
        rib_spacing=u(24, 30),
        rib_drop=u(45, 75),
        rib_phase=u(0, 30),
        lung_hu=u(-880, -830),
        fat_hu=u(-110, -85),
    )
    _vessels(A, rng)
    _trees(A, rng)
    return A


def _vessels(A: Anatomy, rng: np.random.Generator) -> None:
    u = rng.uniform
    r_asc, r_desc = u(14, 18), u(11, 14)
    root = A.heart_c + np.array([u(8, 16), u(5, 12), A.heart_r[2] * 0.75])
    arch_top = np.array([A.bx + u(-4, 4), A.y_spine + u(45, 60), A.zc + u(25, 38)])
    arch_back = np.array([A.bx - u(18, 26), A.y_spine + u(18, 26), A.zc + u(14, 24)])
    desc_low = np.array([A.bx - u(8, 18), A.y_spine + u(14, 22), A.z_dome_l - 60.0])
    mid = (root + arch_top) / 2 + np.array([u(2, 6), 0, 0])
    pts = [root, mid, arch_top, arch_back]
    A.aorta = [(pts[i], pts[i + 1], r_asc if i < 2 else (r_asc + r_desc) / 2) for i in range(3)]
    A.aorta.append((arch_back, desc_low, r_desc))
    trunk0 = A.heart_c + np.array([-u(15, 25), u(25, 35), A.heart_r[2] * 0.55])
    bif = np.array([A.bx - u(5, 12), A.y_spine + u(48, 58), A.zc - u(8, 15)])
    svc0 = np.array([A.bx + u(28, 36), arch_top[1] - u(0, 8), A.zc + u(45, 60)])
    svc1 = A.heart_c + np.array([u(30, 40), u(0, 10), A.heart_r[2] * 0.6])
    A.great_vessels = [(trunk0, bif, u(12, 15)), (svc0, svc1, u(9, 11))]
    for dx in (u(2, 8), -u(6, 12), -u(16, 22)):  # brachiocephalic, left carotid, left subclavian
        p0 = arch_top + np.array([dx, -u(0, 6), -2.0])
        A.great_vessels.append((p0, p0 + np.array([dx * 1.2, u(-5, 5), 120.0]), u(4.5, 7)))
    A.esophagus = [
        (
            np.array([A.bx - u(4, 10), A.y_spine + u(14, 20), A.z_apex + 60]),
            desc_low + np.array([u(6, 12), u(5, 10), 0.0]),
            u(6, 8),
        )
    ]
    A.pa_bif = bif


def _lung_points(A: Anatomy, rng: np.random.Generator, side: int, n: int) -> np.ndarray:
    lo = np.array([A.bx - A.a, A.by - A.b_post, A.z_dome_l - 60])
    hi = np.array([A.bx + A.a, A.by + A.b_ant, A.z_apex])
    p = rng.uniform(lo, hi, size=(n * 8, 3))
    keep = A.lung_side(p[:, 0], p[:, 1], p[:, 2]) == side
    return p[keep][:n]


def _trees(A: Anatomy, rng: np.random.Generator) -> None:
    top = np.array([A.bx, A.y_spine + 38.0, A.z_apex + 60.0])
    carina = np.array([A.bx, A.y_spine + 36.0, A.zc])
    A.airways = [(top, carina, 8.5)]
    for side, sign in ((LUNG_R, 1.0), (LUNG_L, -1.0)):
        pts = _lung_points(A, rng, side, 1500)
        hilum = carina + np.array([sign * rng.uniform(38, 48), rng.uniform(-4, 6), -rng.uniform(12, 22)])
        A.airways.append((carina, hilum, 6.5))
        A.airways += grow(hilum, pts, 5.0, 4, reach=0.55, taper=0.72)
        art_root = A.pa_bif + np.array([sign * 20.0, 0.0, 0.0])
        A.arteries.append((A.pa_bif, art_root, 9.0))
        A.arteries.append((art_root, hilum + np.array([sign * 4.0, 6.0, 6.0]), 8.0))
        A.arteries += offset_tree(grow(hilum, pts, 6.0, 5, reach=0.55, taper=0.74), np.array([sign * 4.0, 6.0, 6.0]))
        la = A.heart_c + np.array([sign * 25.0, -A.heart_r[1] * 0.7, 12.0])
        vroot = la + np.array([sign * 30.0, -10.0, 0.0])
        A.veins.append((la, vroot, 8.0))
        A.veins += grow(vroot, pts[::-1].copy(), 5.5, 5, reach=0.5, taper=0.74)


def render_anatomy(cv: Canvas, A: Anatomy) -> None:
    """Paint the normal anatomy (before findings) into the canvas."""
    X = cv.xs[:, None, None]
    Y = cv.ys[None, :, None]
    Z = cv.zs[None, None, :]
    vx = cv.voxel
    full = (slice(None),) * 3
    cv.blend(full, soft(A.ellipse_depth(X, Y, Z, 0.0), vx), A.fat_hu, BODY)
    cv.blend(full, soft(A.ellipse_depth(X, Y, Z, 1.5), vx), 30.0)  # skin
    cv.blend(full, soft(A.ellipse_depth(X, Y, Z, 2.5), vx), A.fat_hu)
    cv.blend(full, soft(A.ellipse_depth(X, Y, Z, A.fat), vx), 50.0)  # chest wall muscle
    cav = A.cavity_depth(X, Y, Z)
    cv.blend(full, soft(cav, vx), A.fat_hu + 15)  # mediastinal / extrapleural fat
    _ribs_and_spine(cv, A, X, Y, Z, cav)
    # Upper abdomen below the domes: liver on the right, spleen/stomach soft tissue on the left.
    below = (Z < A.dome(X, Y)) & (cav > 0)
    liver_side = X > A.bx - 0.25 * A.a
    cv.blend(full, below.astype(np.float32), np.where(liver_side, 58.0, 38.0), LIVER)
    cv.mark(full, below & liver_side, SEG.LIVER)
    lung = A.lung_side(X, Y, Z)
    # Dependent (posterior) lung is a little denser, as in any supine scan.
    grad = A.lung_hu + 35.0 * np.clip((A.by - Y) / A.b_post, -1, 1)
    cv.blend(full, (lung > 0).astype(np.float32), grad)
    lab = cv.labels
    in_lung = lung > 0
    lab[in_lung] = lung[in_lung]
    if cv.seg is not None and in_lung.any():
        idx = np.nonzero(in_lung)
        Xb, Yb, Zb = (np.broadcast_to(c, lung.shape)[idx] for c in (X, Y, Z))
        cv.seg[idx] = SEG.lobe_id(*A.lobe_parts(Xb, Yb, Zb))
    # Heart with its fat pad; pericardial fluid (a finding) replaces the fat with water-density rim.
    peri = A.pericardial_fluid
    rim_val = 12.0 if peri > 0 else A.fat_hu
    b = cv.box(A.heart_c - A.heart_r.max() - 10 - peri, A.heart_c + A.heart_r.max() + 10 + peri)
    if b is not None:
        s, hx, hy, hz = b
        rim_seg = SEG.lesion_id("Pericardial effusion") if peri > 0 else None
        w_rim = ellipsoid_weight(hx, hy, hz, A.heart_c, A.heart_r + 2.5 + peri, A.heart_rot, vx)
        cv.blend(s, w_rim, rim_val, HEART, seg=rim_seg)
        cv.blend(s, ellipsoid_weight(hx, hy, hz, A.heart_c, A.heart_r + 1.0, A.heart_rot, vx), 42.0, seg=SEG.HEART)
    for p0, p1, r in A.aorta:
        paint_capsule(cv, p0, p1, r, 42.0, VESSEL, seg=SEG.AORTA)
    # great vessels: pulmonary trunk, SVC, brachiocephalic trunk, left carotid, left subclavian
    vessel_seg = [None, SEG.SUPERIOR_VENA_CAVA, SEG.BRACHIOCEPHALIC_TRUNK]
    for i, (p0, p1, r) in enumerate(A.great_vessels):
        paint_capsule(cv, p0, p1, r, 42.0, VESSEL, seg=vessel_seg[i] if i < len(vessel_seg) else None)
    for p0, p1, r in A.esophagus:  # a collapsed muscular tube with a thin line of air, not a vessel
        paint_capsule(cv, p0, p1, r, 34.0, BODY, seg=SEG.ESOPHAGUS)
        paint_capsule(cv, p0, p1, 1.2, -600.0)
    lungs = (LUNG_R, LUNG_L, VESSEL, AIRWAY)
    for p0, p1, r in A.veins + A.arteries:
        paint_capsule(cv, p0, p1, r, 40.0, VESSEL, confine=lungs + (BODY,) if r > 7 else lungs)
    wall = A.bronchial_wall
    thick_wall = SEG.lesion_id("Peribronchial thickening") if wall > 1.5 else None
    for i, (p0, p1, r) in enumerate(A.airways):
        conf = None if r >= 6.0 else lungs  # trachea and main bronchi run through the mediastinum
        paint_capsule(
            cv, p0, p1, r, -1000.0, AIRWAY, wall=max(1.2, 0.25 * r) * wall, wall_value=30.0, confine=conf,
            seg=SEG.TRACHEA if i == 0 else None, wall_seg=thick_wall if r < 6.0 else None,
        )


def _ribs_and_spine(cv: Canvas, A: Anatomy, X, Y, Z, cav) -> None:
    vx = cv.voxel
    full = (slice(None),) * 3
    # Ribs: bony arcs just outside the pleural cavity, running down from back to front.
    theta = np.arctan2((Y - A.by) / A.b_post, (X - A.bx) / A.a)
    phi = np.abs(np.mod(theta + np.pi / 2 + np.pi, 2 * np.pi) - np.pi) / np.pi  # 0 posterior midline, 1 front
    phase = np.mod(Z + A.rib_drop * phi**1.3 + A.rib_phase, A.rib_spacing)
    in_band = (cav < -1.0) & (cav > -10.0) & (Z < A.z_apex + 15) & (Z > A.z_dome_l - 70)
    rib = in_band & (phase < 9.0) & (phi > 0.08)
    costal = rib & (phi > 0.82)  # anterior ends are cartilage
    core = rib & (phase > 2.0) & (phase < 7.0) & (cav < -3.0) & (cav > -8.0)
    cv.blend(full, rib.astype(np.float32), np.where(costal, 120.0, 650.0), BONE)
    cv.blend(full, (core & ~costal).astype(np.float32), 260.0)
    # Sternum: anterior midline plate.
    s = cv.box((A.bx - 20, A.by + A.b_ant - A.fat - A.muscle - 20, A.zc - 150), (A.bx + 20, A.by + A.b_ant, A.zc + 60))
    if s is not None:
        sl, sx, sy, sz = s
        d = A.ellipse_depth(sx, sy, sz, A.fat + 3.0)
        w = soft(np.minimum(14.0 - np.abs(sx - A.bx), np.minimum(d, 12.0 - d)), vx)
        cv.blend(sl, w, 420.0, BONE)
    # Vertebrae: body with discs, canal, posterior arch.
    disc = np.mod(Z - A.rib_phase, A.rib_spacing) < 5.0
    r_vb = 17.0
    dvb = r_vb - np.sqrt((X - A.bx) ** 2 + (Y - A.y_spine) ** 2)
    cv.blend(full, soft(dvb, vx), np.where(disc, 85.0, 700.0), BONE)
    cv.blend(full, soft(dvb - 2.0, vx) * (~disc), 230.0)
    yc = A.y_spine - r_vb - 9.0
    arch = soft(11.0 - np.sqrt(((X - A.bx) / 1.6) ** 2 + (Y - yc) ** 2), vx)
    cv.blend(full, arch, 520.0, BONE)
    spinous = soft(np.minimum(5.0 - np.abs(X - A.bx), 18.0 - np.abs(Y - (yc - 18.0))), vx)
    cv.blend(full, spinous, 520.0)
    cv.blend(full, soft(7.0 - np.sqrt((X - A.bx) ** 2 + (Y - yc) ** 2), vx), 15.0)  # canal (CSF)
