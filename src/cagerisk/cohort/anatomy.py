"""A geometric lumbar-spine phantom in patient coordinates (LPS, millimetres).

``SpineAnatomy`` describes one patient's spine L1-S1 (vertebral bodies with cortex and endplates,
discs with nucleus and annulus, posterior arch, canal), the psoas, quadratus lumborum and paraspinal
muscles, subcutaneous fat and viscera as analytic shapes. ``evaluate`` classifies arbitrary world
coordinates, so every modality samples the same patient on its own grid and masks agree with images.
x points to the patient's left, y posterior, z superior (the DICOM/ITK convention).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cagerisk.cohort.schema import LABELS, LEVELS, VERTEBRAE

# Tissue codes of ``evaluate``; the renderers map them to intensities per modality.
AIR, FAT, VISCERA, MUSCLE, CSF, POSTERIOR_BONE, CORTEX, TRABECULAR, ENDPLATE, ANNULUS, NUCLEUS = range(11)

# Typical L1..S1 body sizes (mm): height, half-width (LR), half-depth (AP); discs L1-L2..L5-S1 heights.
BODY_HEIGHT = np.array([25.0, 26.0, 27.0, 27.5, 27.0, 24.0])
BODY_HALF_WIDTH = np.array([20.0, 21.0, 22.0, 23.0, 24.0, 22.0])
BODY_HALF_DEPTH = np.array([15.0, 15.5, 16.0, 16.5, 17.0, 15.0])
DISC_HEIGHT = np.array([9.0, 10.0, 11.0, 11.5, 10.5])


@dataclass(frozen=True)
class SpineAnatomy:
    body_top: np.ndarray  # z of each body's superior endplate, L1..S1 (descending)
    body_height: np.ndarray
    half_width: np.ndarray
    half_depth: np.ndarray
    disc_half_width: np.ndarray
    disc_half_depth: np.ndarray
    nucleus_fraction: np.ndarray  # nucleus radius relative to the disc, per disc
    lordosis: float  # anterior displacement (mm) of the apex of the lumbar curve
    cortex_mm: float
    endplate_mm: float
    psoas_scale: float
    quadratus_scale: float
    paraspinal_scale: float
    skin_half_width: float
    skin_half_depth: float

    @property
    def z_top(self) -> float:
        return float(self.body_top[0])

    @property
    def z_bottom(self) -> float:
        return float(self.body_top[-1] - self.body_height[-1])

    def body_center_z(self, k: int) -> float:
        return float(self.body_top[k] - self.body_height[k] / 2)

    def disc_bounds(self, j: int) -> tuple[float, float]:
        """(bottom, top) z of disc j (between body j and body j+1)."""
        return float(self.body_top[j + 1]), float(self.body_top[j] - self.body_height[j])

    def level_z_range(self, levels: tuple[str, ...]) -> tuple[float, float]:
        """(low, high) z from the middle of the lowest to the middle of the highest bounding body."""
        first, last = LEVELS.index(levels[0]), LEVELS.index(levels[-1])
        return self.body_center_z(last + 1), self.body_center_z(first)

    def center_y(self, z: np.ndarray) -> np.ndarray:
        """Lordosis: bodies sit more anterior (negative y) near the middle of the lumbar spine."""
        mid = (self.z_top + self.z_bottom) / 2
        half = (self.z_top - self.z_bottom) / 2
        u = np.clip((z - mid) / half, -1.2, 1.2)
        return -self.lordosis * (1.0 - u * u)

    def perturbed(self, rng: np.random.Generator, size_sd: float) -> SpineAnatomy:
        """The same patient as another reader's hand would outline it: sizes off by ~size_sd."""

        def jitter(values: np.ndarray) -> np.ndarray:
            return values * (1.0 + rng.normal(0.0, size_sd, size=np.shape(values)))

        return replace(
            self,
            body_top=self.body_top + rng.normal(0.0, 0.4, size=self.body_top.shape),
            half_width=jitter(self.half_width),
            half_depth=jitter(self.half_depth),
            disc_half_width=jitter(self.disc_half_width),
            disc_half_depth=jitter(self.disc_half_depth),
            psoas_scale=float(jitter(np.array(self.psoas_scale))),
            quadratus_scale=float(jitter(np.array(self.quadratus_scale))),
            paraspinal_scale=float(jitter(np.array(self.paraspinal_scale))),
        )

    def evaluate(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Classify world points: (tissue code, label value, distance to the nearest endplate in mm).

        The endplate distance is meaningful inside vertebral bodies (inf elsewhere); the renderers
        use it for endplate-adjacent marrow changes.
        """
        shape = np.broadcast(x, y, z).shape
        x, y, z = (np.broadcast_to(a, shape) for a in (x, y, z))
        tissue = np.full(shape, AIR, dtype=np.uint8)
        label = np.zeros(shape, dtype=np.uint8)
        endplate_dist = np.full(shape, np.inf, dtype=np.float32)
        yc = self.center_y(z)

        # Body outline: subcutaneous fat everywhere inside the skin, viscera anterior to the spine.
        skin = (x / self.skin_half_width) ** 2 + ((y - 15.0) / self.skin_half_depth) ** 2 <= 1.0
        tissue[skin] = FAT
        viscera = skin & ((x / (0.72 * self.skin_half_width)) ** 2 + ((y + 20.0) / (0.62 * self.skin_half_depth)) ** 2 <= 1.0)
        viscera &= y < yc - 20.0
        tissue[viscera] = VISCERA

        self._muscles(x, y, z, yc, tissue, label)

        self._posterior(x, y, z, yc, tissue, label)
        self._bodies(x, y, z, yc, tissue, label, endplate_dist)
        self._discs(x, y, z, yc, tissue, label)
        return tissue, label, endplate_dist

    def _posterior(
        self, x: np.ndarray, y: np.ndarray, z: np.ndarray, yc: np.ndarray, tissue: np.ndarray, label: np.ndarray
    ) -> None:
        """Canal and posterior arch, continuous along the spine (arch bone only at body levels)."""
        canal_y = yc + float(np.mean(self.half_depth)) + 11.0
        in_span = (z <= self.z_top + 4.0) & (z >= self.z_bottom - 4.0)
        canal_r = (x / 10.0) ** 2 + ((y - canal_y) / 7.5) ** 2
        arch_r = (x / 17.0) ** 2 + ((y - canal_y - 1.0) / 12.5) ** 2
        for k in range(len(VERTEBRAE)):
            zc = self.body_center_z(k)
            near = in_span & (np.abs(z - zc) <= 0.4 * self.body_height[k])
            arch = near & (arch_r <= 1.0) & (canal_r > 1.0)
            spinous = near & (np.abs(x) <= 3.5) & (y > canal_y + 9.0) & (y < canal_y + 38.0)
            spinous &= np.abs(z - zc) <= 0.3 * self.body_height[k]
            tissue[arch | spinous] = POSTERIOR_BONE
            label[arch | spinous] = 0
        canal = in_span & (canal_r <= 1.0)
        tissue[canal] = CSF
        label[canal] = 0

    def _bodies(
        self,
        x: np.ndarray,
        y: np.ndarray,
        z: np.ndarray,
        yc: np.ndarray,
        tissue: np.ndarray,
        label: np.ndarray,
        endplate_dist: np.ndarray,
    ) -> None:
        """Vertebral bodies (concave "waist"), cortex and endplates."""
        for k, name in enumerate(VERTEBRAE):
            top, h = float(self.body_top[k]), float(self.body_height[k])
            slab = (z <= top) & (z >= top - h)
            if not slab.any():
                continue
            u = (z[slab] - (top - h / 2)) / (h / 2)
            waist = 1.0 - 0.06 * (1.0 - u * u)
            a = self.half_width[k] * waist
            b = self.half_depth[k] * waist
            r = np.sqrt((x[slab] / a) ** 2 + ((y[slab] - yc[slab]) / b) ** 2)
            inside = r <= 1.0
            idx = tuple(i[inside] for i in np.nonzero(slab))
            r_in = r[inside]
            dist_end = (h / 2 - np.abs(z[slab][inside] - (top - h / 2))).astype(np.float32)
            cortex = (1.0 - r_in) * float(np.minimum(a, b).min()) < self.cortex_mm
            endplate = dist_end < self.endplate_mm
            t = np.full(r_in.shape, TRABECULAR, dtype=np.uint8)
            t[cortex] = CORTEX
            t[endplate] = ENDPLATE
            tissue[idx] = t
            label[idx] = LABELS[f"vertebra_{name}"]
            endplate_dist[idx] = dist_end

    def _discs(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, yc: np.ndarray, tissue: np.ndarray, label: np.ndarray) -> None:
        """Discs: bulging slightly beyond the bodies, nucleus in the middle."""
        for j, level in enumerate(LEVELS):
            bottom, top = self.disc_bounds(j)
            slab = (z < top) & (z > bottom)
            if not slab.any():
                continue
            u = (z[slab] - (top + bottom) / 2) / ((top - bottom) / 2)
            bulge = 1.0 + 0.05 * (1.0 - u * u)
            a = self.disc_half_width[j] * bulge
            b = self.disc_half_depth[j] * bulge
            r = np.sqrt((x[slab] / a) ** 2 + ((y[slab] - yc[slab]) / b) ** 2)
            inside = r <= 1.0
            idx = tuple(i[inside] for i in np.nonzero(slab))
            nucleus = (r[inside] < self.nucleus_fraction[j]) & (np.abs(u[inside]) < 0.75)
            t = np.where(nucleus, NUCLEUS, ANNULUS).astype(np.uint8)
            tissue[idx] = t
            label[idx] = LABELS[f"disc_{level}"]

    def _muscles(
        self, x: np.ndarray, y: np.ndarray, z: np.ndarray, yc: np.ndarray, tissue: np.ndarray, label: np.ndarray
    ) -> None:
        # Position along the spine: 0 at the top of L1, 5 at the middle of S1.
        t = (self.z_top - z) / max(self.z_top - self.z_bottom, 1.0) * 5.5
        in_span = (t >= -0.3) & (t <= 5.8)
        body_w = float(np.mean(self.half_width))
        body_d = float(np.mean(self.half_depth))
        # Psoas: small at L1, largest at L4-L5, anterolateral to the bodies.
        ps_lr = (5.0 + 2.6 * np.clip(t, 0, 4.6)) * self.psoas_scale
        ps_ap = (6.0 + 2.4 * np.clip(t, 0, 4.6)) * self.psoas_scale
        ps_x = body_w + 1.5 + ps_lr
        # Quadratus lumborum: posterolateral, from L1 down to the iliac crest (about mid L5).
        ql_lr, ql_ap = 15.0 * self.quadratus_scale, 6.0 * self.quadratus_scale
        ql_x = body_w + 35.0 + 2.0 * np.clip(t, 0, 5)
        ql_y = yc + body_d + 18.0
        # Paraspinal (erector spinae and multifidus): either side of the spinous process.
        pa_lr = (17.0 + 1.2 * np.clip(t, 0, 5)) * self.paraspinal_scale
        pa_ap = (16.0 + 0.8 * np.clip(t, 0, 5)) * self.paraspinal_scale
        pa_x = 5.0 + pa_lr
        pa_y = yc + body_d + 11.0 + 17.0 + pa_ap * 0.55
        for side, sign in (("left", 1.0), ("right", -1.0)):
            shapes = (
                ("psoas", ((x - sign * ps_x) / ps_lr) ** 2 + ((y - (yc - 2.0)) / ps_ap) ** 2, in_span & (t <= 5.0)),
                ("quadratus", ((x - sign * ql_x) / ql_lr) ** 2 + ((y - ql_y) / ql_ap) ** 2, in_span & (t <= 5.0)),
                ("paraspinal", ((x - sign * pa_x) / pa_lr) ** 2 + ((y - pa_y) / pa_ap) ** 2, in_span),
            )
            for muscle, r, valid in shapes:
                inside = valid & (r <= 1.0) & (tissue != AIR)
                tissue[inside] = MUSCLE
                label[inside] = LABELS[f"{muscle}_{side}"]


def build_anatomy(
    rng: np.random.Generator,
    sex: str,
    bmi: float,
    disc_degeneration: float,
    muscle_fat: float,
    bone_loss: float,
    endplate_weakness: float,
    fused_levels: tuple[str, ...],
) -> SpineAnatomy:
    """One patient's spine: sizes by sex, disc height by degeneration, muscles by atrophy."""
    size = (1.04 if sex == "M" else 0.95) * (1.0 + rng.normal(0.0, 0.04))
    heights = BODY_HEIGHT * size * (1.0 + rng.normal(0.0, 0.02, size=6))
    # Degeneration thins every disc, the fused (symptomatic) levels most.
    fused = np.array([lv in fused_levels for lv in LEVELS], dtype=float)
    disc_loss = np.clip(0.12 * disc_degeneration + 0.08 * fused + rng.normal(0.0, 0.04, size=5), -0.1, 0.55)
    discs = DISC_HEIGHT * size * (1.0 - disc_loss)
    tops = np.empty(6)
    tops[0] = (heights.sum() + discs.sum()) / 2
    for k in range(1, 6):
        tops[k] = tops[k - 1] - heights[k - 1] - discs[k - 1]
    half_width = BODY_HALF_WIDTH * size * (1.0 + rng.normal(0.0, 0.03, size=6))
    half_depth = BODY_HALF_DEPTH * size * (1.0 + rng.normal(0.0, 0.03, size=6))
    disc_w = (half_width[:-1] + half_width[1:]) / 2 + 1.0
    disc_d = (half_depth[:-1] + half_depth[1:]) / 2 + 1.0
    nucleus = np.clip(0.55 - 0.08 * disc_degeneration - 0.06 * fused + rng.normal(0, 0.03, 5), 0.25, 0.65)
    atrophy = float(np.clip(1.0 - 0.07 * muscle_fat + rng.normal(0.0, 0.04), 0.7, 1.2))
    fat_scale = (bmi / 25.0) ** 0.7
    return SpineAnatomy(
        body_top=tops,
        body_height=heights,
        half_width=half_width,
        half_depth=half_depth,
        disc_half_width=disc_w,
        disc_half_depth=disc_d,
        nucleus_fraction=nucleus,
        lordosis=float(np.clip(rng.normal(9.0, 2.5), 3.0, 16.0)),
        cortex_mm=float(np.clip(1.3 - 0.25 * bone_loss + rng.normal(0, 0.08), 0.6, 2.2)),
        endplate_mm=float(np.clip(1.5 - 0.35 * endplate_weakness + rng.normal(0, 0.1), 0.6, 2.6)),
        psoas_scale=atrophy * size,
        quadratus_scale=atrophy * size,
        paraspinal_scale=atrophy * size,
        skin_half_width=(110.0 + 18.0 * (size - 1.0) * 10) * fat_scale,
        skin_half_depth=(85.0 + 12.0 * (size - 1.0) * 10) * fat_scale,
    )
