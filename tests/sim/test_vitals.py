"""The simulated vitals: always valid readings, and a pulse trace that looks like an ECG."""
from __future__ import annotations

import random

from services.common import v1
from services.common.readings import validate
from services.sim.vitals import Vitals, ecg


def test_every_generated_reading_is_valid_over_many_samples() -> None:
    for wearer in range(12):
        vitals = Vitals(random.Random(wearer))
        t = 1_700_000_000.0
        rng = random.Random(wearer + 1000)
        for _ in range(1000):
            t += rng.choice((0.004, 0.1, 1.0, 10.0, 300.0))  # fast streams, slow demos, long gaps
            values = vitals.sample(t)
            text = v1.format_reading(values)
            assert len(text) < 16 * 10
            parsed = validate(v1.parse_plaintext(text))
            assert 0.0 <= parsed["PulseSig"] <= 3.3
            assert 36.2 <= parsed["Temp"] <= 37.5
            assert 22.0 <= parsed["TempMcu"] <= 30.0 and 22.0 <= parsed["TempMpu"] <= 30.0
            assert abs(parsed["Acel_x"]) < 0.2 and abs(parsed["Acel_y"]) < 0.2
            assert abs(parsed["Acel_z"] - 1.0) < 0.2


def test_the_ecg_shape_peaks_at_r_and_dips_at_s() -> None:
    assert ecg(0.40) > 0.95
    assert ecg(0.43) < 0  # S wave below the baseline
    assert 0.1 < ecg(0.20) < 0.2 and 0.2 < ecg(0.66) < 0.35  # P and T waves
    assert abs(ecg(0.9)) < 0.01  # flat between beats


def test_pulse_beats_at_the_wearers_heart_rate() -> None:
    for wearer in (1, 2, 5, 8):
        vitals = Vitals(random.Random(wearer))
        assert 55 <= vitals.heart_rate <= 100
        samples = [vitals.sample(i / 200)["PulseSig"] for i in range(200 * 60)]  # one minute at 200 Hz
        peaks = sum(1 for a, b in zip(samples, samples[1:], strict=False) if a < 2.0 <= b)  # R waves
        assert abs(peaks - vitals.heart_rate) <= 4, (peaks, vitals.heart_rate)
        assert max(samples) > 2.3 and min(samples) < 1.0


def test_temperature_drifts_slowly() -> None:
    vitals = Vitals(random.Random(7))
    temps = [vitals.sample(float(t))["Temp"] for t in range(3600)]
    assert max(abs(a - b) for a, b in zip(temps, temps[1:], strict=False)) < 0.05
    assert len({round(t, 3) for t in temps}) > 100  # it does move
