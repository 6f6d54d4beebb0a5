"""Plausible vital signs for one simulated wearer (pure: a seeded RNG and the time in, numbers out).

PulseSig is an ECG-like trace: each beat is a sum of Gaussian waves (P, Q, R,
S, T, as in McSharry et al.'s ECGSYN model) on a baseline, sampled at the
moment of the reading, with a per-wearer heart rate of 55-100 bpm and a
little beat-to-beat variability. The temperatures drift slowly around a
per-wearer set point (mean-reverting random walks) and the accelerometer
shows small noise around (0, 0, 1) g: a wearer lying still.
"""
from __future__ import annotations

import math
import random

# (phase of the peak within a beat, amplitude relative to R, width in beat fractions)
WAVES: tuple[tuple[float, float, float], ...] = (
    (0.20, 0.14, 0.025),  # P: atrial depolarisation
    (0.37, -0.12, 0.010),  # Q
    (0.40, 1.00, 0.012),  # R
    (0.43, -0.25, 0.012),  # S
    (0.66, 0.30, 0.045),  # T: ventricular repolarisation
)
BASELINE_V = 1.20  # the pulse sensor's idle output
R_PEAK_V = 1.40  # R wave height above the baseline
PULSE_RANGE = (0.0, 3.3)
TEMP_RANGE = (36.2, 37.5)
BOARD_TEMP_RANGE = (22.0, 30.0)


def ecg(phase: float) -> float:
    """The ECG shape at `phase` in [0, 1) of a beat; 1.0 at the R peak, about 0 between beats."""
    return sum(amp * math.exp(-((phase - mu) ** 2) / (2 * width * width)) for mu, amp, width in WAVES)


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(bounds[1], max(bounds[0], value))


class Vitals:
    """One wearer. `sample(t)` must be called with non-decreasing times (seconds)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.heart_rate = rng.uniform(55.0, 100.0)  # bpm, this wearer's resting rate
        self.temp_set = rng.uniform(36.5, 37.1)
        self.temp = self.temp_set + rng.uniform(-0.2, 0.2)
        self.mcu_set = rng.uniform(24.0, 28.0)
        self.mcu = self.mcu_set
        self.mpu_offset = rng.uniform(-1.5, 1.5)
        self.phase = rng.random()
        self.beat_rate = self.heart_rate
        self.last_t: float | None = None

    def _drift(self, value: float, target: float, dt: float, pull: float, noise: float) -> float:
        """A mean-reverting random walk step (Ornstein-Uhlenbeck), scaled to the elapsed time."""
        dt = min(dt, 60.0)
        return value + (target - value) * min(1.0, pull * dt) + self.rng.gauss(0.0, noise * math.sqrt(dt))

    def sample(self, t: float) -> dict[str, float]:
        dt = 0.0 if self.last_t is None else max(0.0, t - self.last_t)
        self.last_t = t
        # Advance the beat; each new beat gets a slightly different rate (heart rate variability).
        self.phase += dt * self.beat_rate / 60.0
        if self.phase >= 1.0:
            self.phase %= 1.0
            self.beat_rate = self.heart_rate * self.rng.uniform(0.97, 1.03)
        pulse = BASELINE_V + R_PEAK_V * ecg(self.phase) + self.rng.gauss(0.0, 0.01)
        self.temp = _clamp(self._drift(self.temp, self.temp_set, dt, 0.01, 0.003), TEMP_RANGE)
        self.mcu = _clamp(self._drift(self.mcu, self.mcu_set, dt, 0.02, 0.02), BOARD_TEMP_RANGE)
        return {
            "Temp": self.temp,
            "TempMcu": self.mcu,
            "PulseSig": _clamp(pulse, PULSE_RANGE),
            "Acel_x": self.rng.gauss(0.0, 0.015),
            "Acel_y": self.rng.gauss(0.0, 0.015),
            "Acel_z": 1.0 + self.rng.gauss(0.0, 0.015),
            "TempMpu": _clamp(self.mcu + self.mpu_offset, BOARD_TEMP_RANGE),
        }
