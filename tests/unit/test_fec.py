"""The watermark's convolutional code: round trip, error correction, soft erasures, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from workers.media import fec


def _bits(rng, n=128):
    return rng.integers(0, 2, n).astype(np.uint8)


def test_round_trip_and_tail():
    rng = np.random.default_rng(1)
    for n in (1, 7, 128):
        bits = _bits(rng, n)
        coded = fec.encode(bits)
        assert coded.shape == (fec.coded_length(n),) == (2 * (n + 6),)
        assert set(np.unique(coded)) <= {0, 1}
        assert np.array_equal(fec.decode(1.0 - 2.0 * coded), bits)
    # A zero tail returns the encoder to state 0, so the last coded pairs depend only on the last bits.
    assert np.array_equal(fec.encode(np.zeros(20, np.uint8)), np.zeros(52, np.uint8))


def test_corrects_scattered_hard_errors():
    rng = np.random.default_rng(2)
    for _ in range(40):
        bits = _bits(rng)
        soft = 1.0 - 2.0 * fec.encode(bits)
        soft[rng.choice(soft.size, 10, replace=False)] *= -1  # 10 of 268 coded bits flipped
        assert np.array_equal(fec.decode(soft), bits)


def test_too_many_errors_are_not_hidden():
    rng = np.random.default_rng(3)
    bits = _bits(rng)
    soft = 1.0 - 2.0 * fec.encode(bits)
    soft[rng.choice(soft.size, 100, replace=False)] *= -1
    assert not np.array_equal(fec.decode(soft), bits)


def test_soft_values_and_erasures():
    rng = np.random.default_rng(4)
    for _ in range(20):
        bits = _bits(rng)
        soft = (1.0 - 2.0 * fec.encode(bits)) * rng.uniform(0.5, 1.0, fec.coded_length(128))
        soft[rng.choice(soft.size, soft.size // 4, replace=False)] = 0.0  # a quarter erased
        # Weak wrong readings lose against confident right ones.
        wrong = rng.choice(np.flatnonzero(soft), 8, replace=False)
        soft[wrong] = -0.1 * np.sign(soft[wrong])
        assert np.array_equal(fec.decode(soft), bits)
        assert np.array_equal(fec.decode(7.5 * soft), bits)  # only relative confidence matters


def test_gaussian_noise_at_3db():
    rng = np.random.default_rng(5)
    ok = 0
    for _ in range(50):
        bits = _bits(rng)
        ok += np.array_equal(fec.decode(1.0 - 2.0 * fec.encode(bits) + rng.normal(0, 0.7, 268)), bits)
    assert ok >= 48  # Eb/N0 = 3 dB: a K=7 soft Viterbi decoder rarely fails a 128-bit block


@pytest.mark.parametrize("soft", [np.zeros(13), np.zeros(12), np.zeros((2, 134)), np.array([])])
def test_decode_rejects_bad_lengths(soft):
    with pytest.raises(fec.FecError, match=str(soft.shape).replace("(", r"\(").replace(")", r"\)")):
        fec.decode(soft)


def test_decode_rejects_nan_and_encode_rejects_non_bits():
    with pytest.raises(fec.FecError, match="non-finite"):
        fec.decode(np.full(20, np.nan))
    with pytest.raises(fec.FecError, match="0/1"):
        fec.encode(np.array([0, 1, 2]))
    with pytest.raises(fec.FecError, match="0/1"):
        fec.encode(np.array([], np.uint8))
