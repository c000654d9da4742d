"""Synthetic 16 kHz audio for the voice-activity example, made in code (numpy only, fixed seeds, no downloads).

Each sequence is background noise at a random level and colour, plus zero to three "speech-like" segments at
random positions (0.2-0.8 s each): the harmonics below 4 kHz of a gliding f0 in 100-300 Hz, shaped by a
syllable-rate (3-7 Hz) amplitude envelope, at 0-20 dB over the noise; samples are clipped to [-1, 1]. Labels
are per 10 ms frame: 1 on the frames a segment covers, else 0.
"""
from __future__ import annotations

import numpy as np

RATE = 16_000
FRAME = 160  # 10 ms


def sequence(rng: np.random.Generator, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """One sequence (steps >= 40): frames (steps, 160) float32, per-frame labels (steps,) int64 (1: speech)."""
    n = steps * FRAME
    t = np.arange(n) / RATE
    # background: noise of a random colour (white to brown-ish: a 1/f^b spectrum, b in 0-2) at a random level
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.maximum(np.fft.rfftfreq(n, 1 / RATE), 50.0) ** (rng.uniform(0.0, 2.0) / 2)
    noise = np.fft.irfft(spectrum, n)
    noise_rms = 10 ** rng.uniform(-54 / 20, -26 / 20)  # -54 to -26 dBFS
    audio = noise * (noise_rms / noise.std())
    labels = np.zeros(steps, dtype=np.int64)
    for _ in range(rng.integers(0, 4)):
        length = int(rng.integers(20, min(80, steps // 2) + 1))  # 0.2-0.8 s
        start = int(rng.integers(0, steps - length + 1))
        seg = slice(start * FRAME, (start + length) * FRAME)
        ts = t[seg] - t[seg][0]
        f0 = rng.uniform(100, 300) * (1 + rng.uniform(-0.2, 0.2) * ts / ts[-1])  # a glide
        phase = 2 * np.pi * np.cumsum(f0) / RATE
        harmonics = np.arange(1, int(4000 // f0.max()) + 1)
        weights = rng.uniform(0.2, 1.0, len(harmonics)) / harmonics
        voiced = sum(w * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k, w in zip(harmonics, weights))
        rate = rng.uniform(3, 7)  # syllables per second
        envelope = 0.3 + 0.7 * (0.5 - 0.5 * np.cos(2 * np.pi * rate * ts + rng.uniform(0, 2 * np.pi)))
        ramp = np.minimum(1.0, np.minimum(ts, ts[-1] - ts) / 0.01)  # 10 ms on and off
        voiced *= envelope * ramp
        snr_db = rng.uniform(0, 20)
        audio[seg] += voiced * (noise_rms * 10 ** (snr_db / 20) / voiced.std())
        labels[start:start + length] = 1
    return np.clip(audio, -1.0, 1.0).reshape(steps, FRAME).astype(np.float32), labels


def batch(seed: int, count: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` sequences from one seed: frames (count, steps, 160) float32, labels (count, steps) int64."""
    rng = np.random.default_rng(seed)
    frames, labels = zip(*(sequence(rng, steps) for _ in range(count)))
    return np.stack(frames), np.stack(labels)
