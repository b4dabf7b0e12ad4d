"""The embedded synthetic multi-center cohort: NIfTI CT, sagittal T1/T2, axial T1/T2, masks, outcome.

Each patient is drawn by ``latent.draw_patient`` (clinical variables, latent state, outcome), given a
``SpineAnatomy`` and rendered on each scanner's grid. Centers differ in voxel spacing, orientation,
noise, intensity scale and MRI bias field. Everything is deterministic for a seed: each patient has
its own random stream, so the result does not depend on the number of worker processes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from cagerisk.cohort import anatomy as an
from cagerisk.cohort.latent import PatientDraw, draw_patient
from cagerisk.cohort.schema import SEQUENCE_STRUCTURES, SEQUENCES, allowed_label_values, image_column, mask_column
from cagerisk.imaging.io import array_to_image, write_image

log = logging.getLogger(__name__)

# LPS directions (columns = image axes i, j, k in patient space), flattened row-major as ITK wants.
AXIAL_LPS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
AXIAL_RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # stored flipped in-plane (RAS-like)
# Sagittal: i runs posterior, j inferior, k to the patient's right (a proper rotation).
SAGITTAL = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


@dataclass(frozen=True)
class Center:
    """One hospital's scanners and protocols."""

    name: str
    weight: float  # share of the cohort
    ct_spacing: tuple[float, float, float]
    ct_direction: tuple[float, ...]
    ct_noise_hu: float
    ct_blur_mm: float
    ct_scale: float
    ct_offset_hu: float
    sag_inplane: float
    sag_thickness: float
    ax_inplane: float
    ax_thickness: float
    mri_scale: float
    mri_noise: float
    bias_amplitude: float


CENTERS: tuple[Center, ...] = (
    Center("A", 0.45, (0.8, 0.8, 1.5), AXIAL_LPS, 14.0, 0.5, 1.00, 0.0, 0.9, 3.5, 0.80, 4.0, 1.00, 14.0, 0.10),
    Center("B", 0.33, (0.9, 0.9, 2.0), AXIAL_RAS, 20.0, 0.7, 1.03, 6.0, 0.8, 4.0, 0.90, 4.0, 1.35, 22.0, 0.22),
    Center("C", 0.22, (0.75, 0.75, 2.5), AXIAL_LPS, 25.0, 0.4, 0.97, -8.0, 1.0, 3.0, 0.75, 3.5, 0.75, 12.0, 0.16),
)
CENTER_BY_NAME = {c.name: c for c in CENTERS}


@dataclass(frozen=True)
class Grid:
    """An image grid: size (i, j, k), spacing (mm), origin (LPS mm) and direction cosines."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def world(self, k_offset: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates of voxel centres, broadcastable (i, j, k) arrays; k_offset in voxels."""
        d = np.asarray(self.direction).reshape(3, 3)
        axes = [np.arange(n, dtype=np.float32) * s for n, s in zip(self.size, self.spacing, strict=True)]
        axes[2] = axes[2] + np.float32(k_offset * self.spacing[2])
        coords = []
        for row in range(3):
            c = np.float32(self.origin[row])
            c = c + d[row, 0] * axes[0][:, None, None]
            c = c + d[row, 1] * axes[1][None, :, None]
            c = c + d[row, 2] * axes[2][None, None, :]
            coords.append(np.asarray(c, dtype=np.float32))
        return coords[0], coords[1], coords[2]

    def image(self, array: np.ndarray):
        return array_to_image(array, self.spacing, self.origin, self.direction)


def grid_from_bounds(
    bounds: tuple[tuple[float, float], tuple[float, float], tuple[float, float]],
    spacing: tuple[float, float, float],
    direction: tuple[float, ...],
) -> Grid:
    """A grid covering world-axis bounds ((x0,x1),(y0,y1),(z0,z1)) with axes along ``direction``."""
    d = np.asarray(direction).reshape(3, 3)
    size, origin = [], np.zeros(3)
    for axis in range(3):
        world_axis = int(np.argmax(np.abs(d[:, axis])))
        lo, hi = bounds[world_axis]
        size.append(int(np.ceil((hi - lo) / spacing[axis])) + 1)
        origin[world_axis] = lo if d[world_axis, axis] > 0 else hi
    return Grid(tuple(size), tuple(float(s) for s in spacing), tuple(float(o) for o in origin), direction)


def gaussian_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: tuple[float, ...]) -> np.ndarray:
    """Stationary Gaussian random field with unit variance and Gaussian correlation (sigma in voxels)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox, mode="wrap")
    return field / max(float(field.std()), 1e-6)


def sigma_voxels(grid: Grid, sigma_mm: float | tuple[float, float, float]) -> tuple[float, float, float]:
    """Correlation lengths in world axes (x, y, z) mm -> voxels along each image axis."""
    sig = np.broadcast_to(np.asarray(sigma_mm, dtype=float), (3,))
    d = np.abs(np.asarray(grid.direction).reshape(3, 3))
    return tuple(float(sig[int(np.argmax(d[:, a]))] / grid.spacing[a]) for a in range(3))


def bias_field(rng: np.random.Generator, grid: Grid, amplitude: float) -> np.ndarray:
    """Smooth multiplicative MRI bias field (coil sensitivity), product of low-order polynomials."""
    u = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in grid.size]
    c = rng.normal(0.0, 1.0, size=5)
    poly = (
        c[0] * u[0][:, None, None]
        + c[1] * u[1][None, :, None]
        + c[2] * u[0][:, None, None] * u[1][None, :, None]
        + c[3] * (u[1][None, :, None] ** 2 - 0.33)
        + c[4] * u[2][None, None, :] * 0.5
    )
    return np.exp(amplitude * poly / 2.0).astype(np.float32)


class PatientRenderer:
    """Renders one patient on every sequence's grid; random streams are fixed per image."""

    def __init__(self, draw: PatientDraw, center: Center, voxel_scale: float, seed: int):
        self.draw = draw
        self.center = center
        self.voxel_scale = voxel_scale
        self.seed = seed
        rng = self._rng("anatomy")
        lat = draw.latents
        self.anatomy = an.build_anatomy(
            rng,
            sex=draw.sex,
            bmi=draw.bmi,
            disc_degeneration=lat.disc,
            muscle_fat=lat.muscle_fat,
            bone_loss=lat.bone_loss,
            endplate_weakness=lat.endplate,
            fused_levels=draw.fused_levels,
        )

    def _rng(self, purpose: str) -> np.random.Generator:
        # A stable stream per (seed, patient, purpose): independent of process and of call order.
        key = [ord(ch) for ch in purpose]
        return np.random.default_rng([self.seed, self.draw.index, *key])

    # ---- grids -----------------------------------------------------------------------------
    def grid(self, sequence: str) -> Grid:
        a, c, s = self.anatomy, self.center, self.voxel_scale
        z0, z1 = a.z_bottom - 8.0, a.z_top + 8.0
        if sequence == "ct":
            spacing = (c.ct_spacing[0] * s, c.ct_spacing[1] * s, c.ct_spacing[2] * s)
            return grid_from_bounds(((-60.0, 60.0), (-42.0, 84.0), (z0, z1)), spacing, c.ct_direction)
        if sequence in ("t1", "t2"):
            inplane = c.sag_inplane * s
            spacing = (inplane, inplane, c.sag_thickness)
            return grid_from_bounds(((-30.0, 30.0), (-45.0, 70.0), (z0, z1)), spacing, SAGITTAL)
        lo, hi = a.level_z_range(self.draw.fused_levels)
        inplane = c.ax_inplane * s
        spacing = (inplane, inplane, c.ax_thickness)
        return grid_from_bounds(((-92.0, 92.0), (-48.0, 90.0), (lo - 6.0, hi + 6.0)), spacing, AXIAL_LPS)

    # ---- rendering -------------------------------------------------------------------------
    def render(self, sequence: str, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        """(image, reader-1 label map of the sequence's structures) on ``grid``."""
        if sequence == "ct":
            image, label = self._render_ct(grid)
        else:
            image, label = self._render_mri(sequence, grid)
        return image, self._keep_sequence_labels(sequence, label)

    @staticmethod
    def _keep_sequence_labels(sequence: str, label: np.ndarray) -> np.ndarray:
        label = label.astype(np.uint8, copy=True)
        label[~np.isin(label, list(allowed_label_values(sequence)))] = 0
        return label

    def _textures(self, grid: Grid, rng: np.random.Generator) -> dict[str, np.ndarray]:
        lat = self.draw.latents
        # Deteriorated trabecular bone: coarser (longer correlation) and more heterogeneous.
        trab_len = float(np.clip(0.9 + 0.3 * lat.texture, 0.45, 2.2))
        fat_len = (1.2, 1.2, 7.0)  # fatty streaks run along the muscle fibres (cranio-caudal)
        return {
            "trabecular": gaussian_field(rng, grid.size, sigma_voxels(grid, trab_len)),
            "soft": gaussian_field(rng, grid.size, sigma_voxels(grid, 2.5)),
            "streak": gaussian_field(rng, grid.size, sigma_voxels(grid, fat_len)),
            "fine": gaussian_field(rng, grid.size, sigma_voxels(grid, 0.6)),
        }

    def _muscle_fat_mask(self, tissue: np.ndarray, streak: np.ndarray) -> np.ndarray:
        fraction = float(np.clip(0.09 + 0.06 * self.draw.latents.muscle_fat, 0.01, 0.45))
        muscle = tissue == an.MUSCLE
        if not muscle.any():
            return muscle
        threshold = np.quantile(streak[muscle], 1.0 - fraction)
        return muscle & (streak > threshold)

    def _render_ct(self, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        rng = self._rng("ct")
        lat, c = self.draw.latents, self.center
        tissue, label, _ = self.anatomy.evaluate(*grid.world())
        tex = self._textures(grid, rng)
        hu = np.zeros(grid.size, dtype=np.float32)
        base = {
            an.AIR: -1000.0,
            an.FAT: -95.0,
            an.VISCERA: 32.0,
            an.MUSCLE: 52.0,
            an.CSF: 8.0,
            an.POSTERIOR_BONE: 480.0 - 60.0 * lat.bone_loss,
            an.CORTEX: 950.0 - 140.0 * lat.bone_loss,
            an.ENDPLATE: 820.0 - 150.0 * lat.endplate - 50.0 * lat.bone_loss,
            an.ANNULUS: 95.0,
            an.NUCLEUS: 78.0 - 8.0 * lat.disc,
        }
        for code, value in base.items():
            hu[tissue == code] = value
        trab = tissue == an.TRABECULAR
        trab_mean = float(np.clip(215.0 - 55.0 * lat.bone_loss, 50.0, 360.0))
        trab_amp = float(np.clip(32.0 + 12.0 * lat.texture, 10.0, 80.0))
        hu[trab] = trab_mean + trab_amp * tex["trabecular"][trab]
        soft = np.isin(tissue, (an.FAT, an.VISCERA))
        hu[soft] += 12.0 * tex["soft"][soft]
        hu[self._muscle_fat_mask(tissue, tex["streak"])] = -88.0
        if lat.disc > 1.2:  # vacuum phenomenon in severely degenerated discs
            gas = (tissue == an.NUCLEUS) & (tex["fine"] > 1.6)
            hu[gas] = -520.0
        hu = ndimage.gaussian_filter(hu, [c.ct_blur_mm / sp for sp in grid.spacing])
        hu = c.ct_scale * hu + c.ct_offset_hu + rng.normal(0.0, c.ct_noise_hu, size=grid.size).astype(np.float32)
        return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), label

    def _render_mri(self, sequence: str, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        rng = self._rng(sequence)
        lat, c = self.draw.latents, self.center
        t1 = sequence.startswith("t1")
        marrow = (430.0 + 85.0 * lat.bone_loss) if t1 else (370.0 + 55.0 * lat.bone_loss)
        nucleus = 330.0 if t1 else float(np.clip(1050.0 - 250.0 * lat.disc, 180.0, 1300.0))
        values = {
            an.AIR: 4.0,
            an.FAT: 950.0 if t1 else 640.0,
            an.VISCERA: 380.0 if t1 else 520.0,
            an.MUSCLE: 320.0 if t1 else 210.0,
            an.CSF: 190.0 if t1 else 1350.0,
            an.POSTERIOR_BONE: 0.85 * marrow,
            an.CORTEX: 55.0,
            an.ENDPLATE: 70.0,
            an.ANNULUS: 290.0 if t1 else 160.0,
            an.NUCLEUS: nucleus,
            an.TRABECULAR: marrow,
        }
        # Thick slices: average three sub-slice samples, as the slice profile does.
        tex = self._textures(grid, rng)
        signal = np.zeros(grid.size, dtype=np.float32)
        for offset in (-1.0 / 3.0, 0.0, 1.0 / 3.0):
            tissue, label, end_dist = self.anatomy.evaluate(*grid.world(k_offset=offset))
            if offset == 0.0:
                center_label = label
            part = np.zeros(grid.size, dtype=np.float32)
            for code, value in values.items():
                part[tissue == code] = value
            trab = tissue == an.TRABECULAR
            part[trab] += (18.0 + 8.0 * lat.texture) * tex["trabecular"][trab]
            if lat.endplate > 0.3:  # Modic-like marrow change next to weak endplates
                band = trab & (end_dist < 1.5 + 2.5 * lat.endplate)
                part[band] *= 0.6 if (t1 and lat.endplate > 1.2) else 1.3
            part[self._muscle_fat_mask(tissue, tex["streak"])] = values[an.FAT]
            soft = np.isin(tissue, (an.FAT, an.VISCERA))
            part[soft] += 25.0 * tex["soft"][soft]
            signal += part / 3.0
        signal *= bias_field(rng, grid, c.bias_amplitude) * c.mri_scale
        noise = c.mri_noise * c.mri_scale
        real = signal + rng.normal(0.0, noise, size=grid.size).astype(np.float32)
        imag = rng.normal(0.0, noise, size=grid.size).astype(np.float32)
        magnitude = np.sqrt(real * real + imag * imag)  # Rician magnitude noise
        return np.clip(np.rint(magnitude), 0, 32767).astype(np.int16), center_label

    # ---- masks -----------------------------------------------------------------------------
    def second_reader_mask(self, sequence: str, grid: Grid, reader: int = 2) -> np.ndarray:
        """Label map as another reader outlines the same patient (reader 1's comes with ``render``).

        The second reader's contour differs by a smooth displacement of about one voxel on CT and
        1.5-2 voxels on MRI (lower contrast), plus slight size differences: not a copy of reader 1.
        """
        x, y, z = grid.world()
        rng = self._rng(f"reader{reader}-{sequence}")
        anatomy = self.anatomy.perturbed(rng, size_sd=0.015)
        voxels = {"ct": 0.9, "t1": 1.3, "t2": 1.2, "t1ax": 1.8, "t2ax": 1.6}[sequence]
        amplitude = voxels * float(min(grid.spacing[0], grid.spacing[1]))
        smooth = sigma_voxels(grid, 6.0)
        x = x + amplitude * gaussian_field(rng, grid.size, smooth)
        y = y + amplitude * gaussian_field(rng, grid.size, smooth)
        z = z + amplitude * gaussian_field(rng, grid.size, smooth)
        _, label, _ = anatomy.evaluate(x, y, z)
        return self._keep_sequence_labels(sequence, label)


def assign_centers(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng([seed, 990])
    weights = np.array([c.weight for c in CENTERS])
    return [CENTERS[i].name for i in rng.choice(len(CENTERS), size=n, p=weights / weights.sum())]


def draw_cohort(n: int, seed: int) -> list[tuple[PatientDraw, str]]:
    """Clinical draws and centers for n patients; each patient from its own stream."""
    centers = assign_centers(n, seed)
    return [(draw_patient(i, np.random.default_rng([seed, i])), centers[i]) for i in range(n)]


def patient_id(index: int) -> str:
    return f"P{index + 1:04d}"


@dataclass(frozen=True)
class ImageJob:
    draw: PatientDraw
    center: str
    out_dir: str
    voxel_scale: float
    seed: int
    second_reader: bool


def render_patient(job: ImageJob) -> dict[str, str]:
    """Write one patient's images and masks; returns manifest path columns (relative to out_dir)."""
    pid = patient_id(job.draw.index)
    renderer = PatientRenderer(job.draw, CENTER_BY_NAME[job.center], job.voxel_scale, job.seed)
    folder = Path(job.out_dir) / "images" / pid
    row: dict[str, str] = {}
    for sequence in SEQUENCES:
        grid = renderer.grid(sequence)
        image, mask = renderer.render(sequence, grid)
        files = {image_column(sequence): image, mask_column(sequence): mask}
        if job.second_reader:
            files[mask_column(sequence, 2)] = renderer.second_reader_mask(sequence, grid)
        for column, array in files.items():
            name = column.replace("_image", "") + ".nii.gz"
            write_image(grid.image(array), folder / name)
            row[column] = f"images/{pid}/{name}"
    return row


def render_cohort(jobs: list[ImageJob], n_jobs: int | None = None) -> Iterator[dict[str, str]]:
    """Render patients in worker processes (results in input order)."""
    n_jobs = n_jobs or os.cpu_count() or 1
    if n_jobs == 1 or len(jobs) == 1:
        yield from map(render_patient, jobs)
        return
    with ProcessPoolExecutor(max_workers=n_jobs) as pool:
        yield from pool.map(render_patient, jobs, chunksize=1)


__all__ = [
    "CENTERS",
    "Center",
    "Grid",
    "ImageJob",
    "PatientRenderer",
    "SEQUENCE_STRUCTURES",
    "draw_cohort",
    "patient_id",
    "render_cohort",
    "render_patient",
]
