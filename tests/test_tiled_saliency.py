"""Tests for srtools.tiled.saliency."""

import numpy as np
import pytest

from srtools.tiled.saliency import segment_attention, spectral_residual


def frame_with_textured_square(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    frame = np.full((144, 256), 100, dtype=np.uint8)
    square = np.zeros(frame.shape, dtype=bool)
    square[40:80, 150:200] = True
    frame[square] = rng.integers(150, 256, square.sum())
    return frame, square


def test_textured_square_is_salient():
    frame, square = frame_with_textured_square(np.random.default_rng(0))
    saliency = spectral_residual(frame)
    assert saliency.shape == frame.shape
    assert saliency.dtype == np.float32
    assert saliency.min() == 0.0 and saliency.max() == 1.0
    assert saliency[square].mean() > 3 * saliency[~square].mean()
    peak = np.unravel_index(np.argmax(saliency), saliency.shape)
    assert square[peak]


def test_constant_frame_gives_zero_map():
    saliency = spectral_residual(np.full((36, 64), 77, dtype=np.uint8))
    assert not saliency.any()


def test_fft_runs_at_working_width_and_small_frames_are_not_upscaled(monkeypatch):
    fft_shapes = []
    fft2 = np.fft.fft2
    monkeypatch.setattr(np.fft, "fft2", lambda a: fft_shapes.append(a.shape) or fft2(a))
    frame, _ = frame_with_textured_square(np.random.default_rng(1))
    saliency = spectral_residual(frame[::8, ::8])  # 18x32: narrower than the working width
    assert saliency.shape == (18, 32) and np.isfinite(saliency).all()
    spectral_residual(frame)  # 144x256: downscaled to 64 px wide
    assert fft_shapes == [(18, 32), (36, 64)]


def test_rejects_colour_frames():
    with pytest.raises(ValueError):
        spectral_residual(np.zeros((8, 8, 3), dtype=np.uint8))


def test_attention_sums_to_one_and_favours_structured_segments():
    rng = np.random.default_rng(2)
    busy = [frame_with_textured_square(rng)[0] for _ in range(3)]
    blank = [np.full((144, 256), 30, dtype=np.uint8)] * 2
    attention = segment_attention([busy, blank, busy[:1]])
    assert attention.shape == (3,)
    assert attention.sum() == pytest.approx(1.0)
    assert attention[0] > attention[1] == 0.0


def test_constant_frames_give_uniform_attention():
    segments = [[np.full((16, 16), value, dtype=np.uint8)] * 2 for value in (0, 128, 255, 9)]
    attention = segment_attention(segments)
    assert np.isfinite(attention).all()
    np.testing.assert_allclose(attention, 0.25)


def test_segment_without_frames_is_an_error():
    with pytest.raises(ValueError):
        segment_attention([[np.zeros((8, 8), dtype=np.uint8)], []])
    with pytest.raises(ValueError):
        segment_attention([])
