"""`cfconv gradient-noise`: sparse-step generator gradients against the exact gradient."""

import jax
import pytest

from cfconv.cli import main
from cfconv.experiments import format_agreement, sparse_gradient_agreement
from cfconv.models import make_model
from helpers import raises_naming


def _setup(name="hw_cin_cout"):
    km, kx, ky = jax.random.split(jax.random.key(0), 3)
    model = make_model(name, in_channels=2, num_classes=3, width=3, depth=2, key=km)
    images = jax.random.normal(kx, (4, 2, 6, 6))
    labels = jax.random.randint(ky, (4,), 0, 3)
    return model, images, labels


def test_sampling_everything_gives_the_exact_gradient():
    model, images, labels = _setup()
    result = sparse_gradient_agreement(model, images, labels, [1.0, 0.2], repeats=3,
                                       key=jax.random.key(1))  # fmt: skip
    assert result["fractions"] == [1.0, 0.2]
    full, part = result["cosine"]
    assert len(full) == len(part) == 2  # one entry per layer
    # Rate 1 without replacement at every position is the dense step itself.
    assert full == pytest.approx([1.0, 1.0], abs=1e-4)
    assert result["norm_ratio"][0] == pytest.approx([1.0, 1.0], abs=1e-3)
    # A fifth of the positions gives a gradient that points roughly, not exactly, right.
    assert all(0.0 < c < 0.999 for c in part)
    # Averaging draws points better than one draw does (on average over layers).
    assert sum(result["cosine_of_mean"][1]) > sum(part)
    table = format_agreement(result)
    assert "| 1 | 1.00 1.00 | 1.000 |" in table


def test_stratified_steps_agree_with_the_exact_gradient():
    model, images, labels = _setup()
    weight_batch = (images[::-1], labels[::-1])
    result = sparse_gradient_agreement(model, images, labels, [1.0, 0.2], repeats=3,
                                       key=jax.random.key(1), sampling="stratified",
                                       weight_batch=weight_batch)  # fmt: skip
    # The whole grid, stratified or not, is the dense step.
    assert result["cosine"][0] == pytest.approx([1.0, 1.0], abs=1e-4)
    assert result["norm_ratio"][0] == pytest.approx([1.0, 1.0], abs=1e-3)
    assert all(0.0 < c < 0.999 for c in result["cosine"][1])
    # The zero frequency's share of the exact kernel gradient, per layer.
    assert len(result["zero_frequency_share"]) == 2
    assert all(0 < share < 1 for share in result["zero_frequency_share"])
    with pytest.raises(ValueError, match="`weight_batch`"):
        sparse_gradient_agreement(model, images, labels, [0.5], key=jax.random.key(0),
                                  sampling="stratified")  # fmt: skip
    with raises_naming("sampling", ValueError, checker=True):
        sparse_gradient_agreement(model, images, labels, [0.5], key=jax.random.key(0),
                                  sampling="importance")  # pyright: ignore  # fmt: skip


def test_bad_arguments_are_named():
    model, images, labels = _setup()
    with pytest.raises(ValueError, match="`fractions`"):
        sparse_gradient_agreement(model, images, labels, [0.0], key=jax.random.key(0))
    with pytest.raises(ValueError, match="`repeats`"):
        sparse_gradient_agreement(model, images, labels, [0.5], repeats=0, key=jax.random.key(0))
    spatial, _, _ = _setup("spatial")
    with raises_naming("model", TypeError, checker=False):
        sparse_gradient_agreement(spatial, images, labels, [0.5], key=jax.random.key(0))


def test_cli_prints_the_table(capsys):
    argv = ["gradient-noise", "--width", "2", "--depth", "1", "--repeats", "1",
            "--fractions", "1", "--batch-size", "4"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| 1 | 1.00 | 1.000 | 1.000 |" in out
    assert "at the zero frequency: " in out
    assert main(argv + ["--sampling", "stratified"]) == 0
    out = capsys.readouterr().out
    assert "stratified by the kernel gradient" in out and "| 1 | 1.00 | 1.000 | 1.000 |" in out
    with pytest.raises(SystemExit):
        main(["gradient-noise", "--fractions", "0,1"])
    assert "each fraction must be in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["gradient-noise", "--seed", "-1"])
    assert "--seed" in capsys.readouterr().err
