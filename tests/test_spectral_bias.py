"""The spectral-bias experiment: targets, error measures, parameter parity, end to end."""

import json

import numpy as np
import pytest

import cfconv
from cfconv.cli import main
from cfconv.experiments import (
    DOMAINS,
    TARGETS,
    SpectralBiasConfig,
    band_labels,
    band_shares,
    kernel_errors,
    matched_hidden,
    target_kernel,
)


def _mlp_size(in_size, hidden):
    widths = [in_size, *hidden, 1]
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def _offsets(n):
    return np.array([k if k < (n + 1) // 2 else k - n for k in range(n)])


@pytest.mark.parametrize("name", ["low-pass", "band-pass", "high-pass"])
def test_frequency_targets_have_their_responses(name):
    n = 16
    kernel = target_kernel(name, n)
    f = np.array([k / n for k in _offsets(n)])  # cycles per pixel, fftfreq order
    rho = np.hypot(f[:, None], f[None, :])
    response = {
        "low-pass": np.exp(-(rho**2) / 0.02),
        "band-pass": np.exp(-((rho - 0.25) ** 2) / 0.005),
        "high-pass": 1 - np.exp(-(rho**2) / 0.02),
    }[name]
    np.testing.assert_allclose(np.fft.fft2(kernel), response, atol=1e-12)


def test_gabor_and_random_targets():
    gabor = target_kernel("gabor", 64)
    spectrum = np.abs(np.fft.fft2(gabor))
    row, col = np.unravel_index(np.argmax(spectrum[:, :32]), spectrum[:, :32].shape)
    # The carrier: 0.25 cycles per pixel at 30 degrees, (f_y, f_x) = (0.125, 0.2165).
    assert abs(_offsets(64)[row] / 64 - 0.125) <= 1 / 64
    assert abs(col / 64 - 0.25 * np.cos(np.pi / 6)) <= 1 / 64
    random = target_kernel("random", 12, seed=3)
    dy, dx = np.meshgrid(_offsets(12), _offsets(12), indexing="ij")
    inside = (np.abs(dy) <= 2) & (np.abs(dx) <= 2)
    assert np.all(random[~inside] == 0) and np.count_nonzero(random[inside]) == 25
    assert not np.allclose(random, target_kernel("random", 12, seed=4))
    np.testing.assert_array_equal(random, target_kernel("random", 12, seed=3))


def test_kernel_errors_split_by_band():
    config = SpectralBiasConfig(bands=4)
    n = 16
    target = target_kernel("low-pass", n)
    y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    # An error at a single frequency, 5/16 = 0.3125 cycles per pixel along x: band 2
    # of [0, 0.125, 0.25, 0.375, 0.5].
    error = 0.1 * np.cos(2 * np.pi * 5 * x / n)
    rel, bands = kernel_errors(target + error, target, config)
    expected = np.linalg.norm(error) / np.linalg.norm(target)
    assert np.isclose(rel, expected)
    labels = band_labels(config)
    assert list(bands) == labels == ["0.000-0.125", "0.125-0.250", "0.250-0.375", "0.375-0.707"]
    assert np.isclose(bands[labels[2]], expected)
    assert all(bands[b] < 1e-12 for b in labels if b != labels[2])
    # Squares of band errors add up; a zero kernel has error 1, split as the target.
    shares = band_shares(target, config)
    assert np.isclose(sum(v**2 for v in shares.values()), 1.0)
    assert kernel_errors(target, target, config)[0] == 0


def test_matched_hidden_equalises_parameters():
    paper = cfconv.DEFAULT_HIDDEN["hw_cin_cout"]
    widths = matched_hidden(paper, 4, 34)
    assert len(widths) == len(paper)
    assert _mlp_size(34, widths) == _mlp_size(4, paper) == 3633
    assert min(widths) >= 0.5 * min(paper)  # scaled, no bottleneck
    assert matched_hidden((8, 8), 4, 4) == (8, 8)


def test_config_checks():
    with pytest.raises(ValueError, match="`steps`"):
        SpectralBiasConfig(steps=0)
    with pytest.raises(ValueError, match="`targets`"):
        SpectralBiasConfig(targets=("notch",))
    with pytest.raises(ValueError, match="`name`"):
        target_kernel("notch", 8)
    quick = SpectralBiasConfig.quick()
    assert (quick.image_size, quick.steps, quick.seeds) == (16, 300, 2)


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["spectral-bias", "--image-size", "8", "--steps", "150", "--seeds", "1",
                 "--lr", "1e-2", "--hidden", "16,16", "--num-features", "3", "--bands", "2",
                 "--json", str(out / "r.json"), "--figures", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| target | fourier | spatial | spatial-fourier-features |" in printed
    data = json.loads((out / "r.json").read_text())
    assert data["settings"]["image_size"] == 8 and data["settings"]["steps"] == 150
    results = data["results"]
    assert len(results) == len(TARGETS) * len(DOMAINS)
    assert {r["domain"] for r in results} == set(DOMAINS)
    assert {r["target"] for r in results} == set(TARGETS)
    for r in results:
        assert set(r) >= {"target", "domain", "seed", "params", "rel_error", "band_errors"}
        assert np.isfinite(r["rel_error"]) and r["rel_error"] >= 0
        assert list(r["band_errors"]) == data["settings"]["band_labels"]
        assert np.isclose(sum(v**2 for v in r["band_errors"].values()), r["rel_error"] ** 2)
        assert (r["rel_error_2x"] is None) == (r["domain"] != "fourier")
    params = {r["domain"]: r["params"] for r in results}
    assert params["fourier"] == params["spatial"] == 2 * _mlp_size(4, (16, 16))
    # Small MLPs cannot always match exactly: within 1%.
    assert abs(params["spatial-fourier-features"] - params["fourier"]) <= 0.01 * params["fourier"]
    # A few steps with a small MLP: every generator must still cut the error of the
    # low-pass well below that of a zero kernel (1).
    for r in results:
        if r["target"] == "low-pass":
            assert r["rel_error"] < 0.5, r
    for name in ("spectral-bias-bands.png", "spectral-bias-kernels.png"):
        assert (out / name).stat().st_size > 1000


def test_cli_rejects_bad_settings(capsys):
    assert main(["spectral-bias", "--image-size", "3"]) == 2
    assert "`image_size`" in capsys.readouterr().err
