"""The schedules of vqvae_nat's training (``fairseq_vqvae.curriculum``): values at 0, at the
warm-up edge and at the end."""

import pytest

from fairseq_vqvae import curriculum


def test_step_on_schedule():
    assert curriculum.step_on(0, 5) == 0.0
    assert curriculum.step_on(4, 5) == 0.0
    assert curriculum.step_on(5, 5) == 1.0  # edge
    assert curriculum.step_on(10_000, 5) == 1.0
    assert curriculum.step_on(0, 0) == 1.0


def test_inverse_exp_decay_schedule():
    assert curriculum.inverse_exp_decay(0, 10, min_value=0.01) == pytest.approx(0.01)
    # Geometric: halfway through, 0.01 ** (5 / 10) = 0.1.
    assert curriculum.inverse_exp_decay(5, 10, min_value=0.01) == pytest.approx(0.1)
    assert curriculum.inverse_exp_decay(9, 10, min_value=0.01) == pytest.approx(
        0.01**0.1
    )
    assert curriculum.inverse_exp_decay(10, 10) == 1.0  # edge
    assert curriculum.inverse_exp_decay(10_000, 10) == 1.0  # end
    assert curriculum.inverse_exp_decay(0, 0) == 1.0
    values = [curriculum.inverse_exp_decay(step, 10) for step in range(11)]
    assert values == sorted(values)
