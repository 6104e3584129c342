"""Synthetic motion over still photographs: clips whose every displacement is known, for training TCSR.

A temporal network learns what consecutive frames of a video add to one another: the same scene
point seen at several sub-pixel offsets, and compression noise that differs from frame to frame.
Still photographs (the generic models' material, see :mod:`srtools.generic`) become such video
when a virtual camera moves over them:

- the camera pans at a constant velocity (any direction, up to :data:`MAX_PAN` pixels a frame),
  and on some clips also zooms or rolls slowly, so that flows are not all one translation;
- objects (elliptic cut-outs of other photographs, soft-edged) cross the picture with velocities
  of their own, so that flows differ between regions and occlusions happen;
- a share of the clips stand still, so that "nothing moves" is also seen.

Frames are rendered with bicubic interpolation from the photograph at its own resolution (the
photograph is never upsampled by more than the zoom), and :func:`render` returns, with each clip,
the motion it was drawn with.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from . import y4m

MAX_PAN = 5.0  # pixels a frame, at the clip's resolution: fast for a camera at 25 fps, slow for a whip pan
MAX_ZOOM = 0.01  # relative scale change a frame
MAX_ROLL = 0.4  # degrees a frame
MAX_OBJECT_SPEED = 6.0  # pixels a frame
STILL_SHARE = 0.1  # clips whose camera stands still


@dataclasses.dataclass(frozen=True)
class Motion:
    """How a clip moves: the camera (pan in pixels a frame, zoom as a relative scale change a frame,
    roll in degrees a frame) and each object's (start x, start y, velocity x, velocity y) in pixels."""

    pan: tuple[float, float]
    zoom: float
    roll: float
    objects: tuple[tuple[float, float, float, float], ...]


def random_motion(rng: np.random.Generator, size: int, objects: int) -> Motion:
    """A random camera and object motion for a ``size`` x ``size`` clip (see the module docstring)."""
    if rng.random() < STILL_SHARE:
        pan, zoom, roll = (0.0, 0.0), 0.0, 0.0
    else:
        angle, speed = rng.uniform(0, 2 * math.pi), rng.uniform(0.2, MAX_PAN)
        pan = (speed * math.cos(angle), speed * math.sin(angle))
        kind = rng.random()
        zoom = rng.uniform(-MAX_ZOOM, MAX_ZOOM) if kind < 0.25 else 0.0
        roll = rng.uniform(-MAX_ROLL, MAX_ROLL) if 0.25 <= kind < 0.5 else 0.0
    moving = []
    for _ in range(objects):
        angle, speed = rng.uniform(0, 2 * math.pi), rng.uniform(0.5, MAX_OBJECT_SPEED)
        moving.append((rng.uniform(0, size), rng.uniform(0, size), speed * math.cos(angle), speed * math.sin(angle)))
    return Motion(pan, zoom, roll, tuple(moving))


def _camera(photo_shape: tuple[int, int], size: int, frames: int, motion: Motion) -> list[np.ndarray]:
    """One 2x3 affine matrix a frame mapping clip pixels to photograph pixels, the path centred on the
    photograph so that it stays inside it as far as it can."""
    h, w = photo_shape
    half = (size - 1) / 2
    middle = (frames - 1) / 2
    matrices = []
    for t in range(frames):
        scale = (1 + motion.zoom) ** (t - middle)
        theta = math.radians(motion.roll * (t - middle))
        cx = (w - 1) / 2 + motion.pan[0] * (t - middle)
        cy = (h - 1) / 2 + motion.pan[1] * (t - middle)
        cos, sin = scale * math.cos(theta), scale * math.sin(theta)
        # photo = centre + R * s * (clip - half)
        matrices.append(np.array([[cos, -sin, cx - cos * half + sin * half],
                                  [sin, cos, cy - sin * half - cos * half]], np.float64))
    return matrices


def _object(rng: np.random.Generator, photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An elliptic cut-out of ``photo``: (BGR patch, alpha in [0, 1] with a soft edge)."""
    h, w = photo.shape[:2]
    oh, ow = (int(rng.integers(32, min(96, h // 2) + 1)), int(rng.integers(32, min(96, w // 2) + 1)))
    y, x = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
    alpha = np.zeros((oh, ow), np.float32)
    cv2.ellipse(alpha, (ow // 2, oh // 2), (ow // 2 - 2, oh // 2 - 2), 0, 0, 360, 1.0, -1)
    return photo[y:y + oh, x:x + ow], cv2.GaussianBlur(alpha, (5, 5), 1.0)


def render(photo: np.ndarray, others: list[np.ndarray], rng: np.random.Generator, size: int = 192,
           frames: int = 12, objects: int | None = None) -> tuple[np.ndarray, Motion]:
    """A synthetic clip over ``photo`` with objects cut from ``others``.

    Args:
        photo: (H, W, 3) BGR uint8 background, at least ``size`` pixels each way.
        others: photographs to cut the objects from.
        rng: random generator (the clip is a function of its state).
        size: the clip's width and height in pixels.
        frames: how many frames.
        objects: how many objects cross the picture (default: 0 to 2 at random).

    Returns:
        ((frames, size, size, 3) BGR uint8 frames, the motion they show).
    """
    count = int(rng.integers(0, 3)) if objects is None else objects
    motion = random_motion(rng, size, count if others else 0)
    cut_outs = [_object(rng, others[int(rng.integers(len(others)))]) for _ in motion.objects]
    clip = np.empty((frames, size, size, 3), np.uint8)
    for t, matrix in enumerate(_camera(photo.shape[:2], size, frames, motion)):
        frame = cv2.warpAffine(photo, matrix, (size, size), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
        for (x0, y0, vx, vy), (patch, alpha) in zip(motion.objects, cut_outs):
            # The object's top-left corner at a sub-pixel position: a translation of the patch.
            shift = np.array([[1, 0, x0 + vx * t - patch.shape[1] / 2], [0, 1, y0 + vy * t - patch.shape[0] / 2]])
            placed = cv2.warpAffine(patch, shift, (size, size), flags=cv2.INTER_CUBIC,
                                    borderMode=cv2.BORDER_CONSTANT).astype(np.float32)
            weight = cv2.warpAffine(alpha, shift, (size, size), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT)[..., None]
            frame = frame * (1 - weight) + placed * weight
        clip[t] = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    return clip, motion


def write_y4m(path: str, clip: np.ndarray, fps: int = 25) -> None:
    """Write (frames, H, W, 3) BGR frames (H and W even) as 4:2:0 Y4M, converted as OpenCV's BT.601
    limited-range I420 (the conversion srtools.metrics's RGB-PSNR uses)."""
    h, w = clip.shape[1:3]
    with open(path, "wb") as stream:
        writer = y4m.Writer(stream, y4m.Header(w, h, fps=fps))
        for bgr in clip:
            yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
            quarter = h * w // 4
            chroma = yuv[h:].reshape(-1)
            writer.write(y4m.Frame([yuv[:h], chroma[:quarter].reshape(h // 2, w // 2),
                                    chroma[quarter:].reshape(h // 2, w // 2)]))
