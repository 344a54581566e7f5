"""Pictures of kernels and sampling patterns, from arrays and from training checkpoints."""

import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import cfconv
from cfconv.cli import main
from cfconv.data import Dataset
from cfconv.experiments import load_trained_model, plot_kernels, plot_sampling
from cfconv.train import TrainConfig, fit


def _png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_plot_kernels(tmp_path):
    kernel = cfconv.init_kernel_state(2, 3, 8, 6, key=jax.random.key(0)).kernel
    path = plot_kernels(kernel, tmp_path / "k.png", width=6, pairs=2, title="t", dpi=50)
    # Two rows of three panels: a 7.5 x (1.9 * 2 + 0.4) inch figure at 50 dots per inch.
    assert _png_size(path) == (375, 210)
    with pytest.raises(ValueError, match="`width`"):
        plot_kernels(kernel, tmp_path / "bad.png", width=9)
    with pytest.raises(ValueError, match="`kernel`"):
        plot_kernels(np.zeros((2, 3, 8, 4)), tmp_path / "bad.png")


def test_plot_sampling(tmp_path):
    shape = (2, 2, 6, 4)
    positions = cfconv.sample_positions(jax.random.key(0), shape, 30)
    path = plot_sampling(shape, positions, tmp_path / "s.png", pairs=3, dpi=50)
    assert _png_size(path) == (int(50 * (1.8 * 3 + 0.4)), 130)


def _stripes(n, size=8, channels=3, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = rng.integers(0, 256, (n, size, size, channels)).astype(np.uint8)
    return Dataset(images, labels.astype(np.int32), tuple(f"c{k}" for k in range(classes)))


@pytest.fixture(scope="module", params=["uniform", "stratified", "stratified-strategy"])
def checkpoint(tmp_path_factory, request):
    """A one-epoch run of a small CF-Conv net on 3-channel images of 3 classes; with
    "stratified-strategy", `fit` gets a stratified strategy where the config says uniform."""
    folder = tmp_path_factory.mktemp("run")
    sampling = "uniform" if request.param == "stratified-strategy" else request.param
    config = TrainConfig(model="hw_cin_cout", positions=64, epochs=1, width=4, depth=2,
                         image_size=8, batch_size=8, mlp_hidden=(8, 8),
                         sampling=sampling)  # fmt: skip
    strategy = None
    if request.param == "stratified-strategy":
        strategy = cfconv.Sparse(num=64, rate=0.1, sampling="stratified")
    fit(config, _stripes(24), _stripes(9, seed=1), checkpoint_dir=folder, log=None,
        strategy=strategy)  # fmt: skip
    return folder, request.param != "uniform"


def test_load_trained_model_reads_channels_and_classes(checkpoint):
    checkpoint, stratified = checkpoint
    model, states, metadata = load_trained_model(checkpoint)
    assert all((s.frequency_weights is not None) == stratified for s in states)
    assert (model.in_channels, model.num_classes) == (3, 3)
    assert metadata["epoch"] == 1 and metadata["config"]["width"] == 4
    assert [s.kernel.shape for s in states] == [(3, 4, 8, 5), (4, 4, 8, 5)]
    # The loaded kernels are the saved ones, not a fresh initialisation.
    fresh = model.init_states((8, 8), key=jax.random.key(0))
    assert not np.allclose(states[0].kernel, fresh[0].kernel)


def test_cfconv_plot(checkpoint, tmp_path, capsys):
    checkpoint, _ = checkpoint
    out = tmp_path / "plots"
    assert main(["plot", str(checkpoint), "--out", str(out), "--pairs", "2"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["kernels-layer0.png", "kernels-layer1.png", "sampling-layer0.png",
                       "sampling-layer1.png"]  # fmt: skip
    assert _png_size(out / "kernels-layer0.png") == (600, 336)  # 7.5 x 4.2 inches at 80 dpi
    assert "wrote" in capsys.readouterr().out
    assert main(["plot", str(checkpoint), "--out", str(out / "g"), "--layers", "1",
                 "--source", "generator"]) == 0  # fmt: skip
    assert sorted(p.name for p in (out / "g").iterdir()) == [
        "kernels-layer1.png",
        "sampling-layer1.png",
    ]
    assert main(["plot", str(checkpoint), "--layers", "5", "--out", str(out)]) == 2
    assert main(["plot", str(tmp_path / "nothing"), "--out", str(out)]) == 2


def test_core_imports_without_matplotlib():
    code = (
        "import sys, cfconv, cfconv.experiments, cfconv.cli\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("sampling", ["uniform", "stratified"])
def test_template_of_a_checkpoint_without_the_weights_flag(sampling):
    """Checkpoints from before `frequency_weights` was recorded: the states hold weights
    if the config stratifies; the recorded flag overrides the config."""
    from cfconv.experiments._trained import _template

    config = TrainConfig(model="hw", positions=8, width=4, depth=2, sampling=sampling)
    for weights, expected in ((None, sampling == "stratified"), (True, True), (False, False)):
        _, states, _, _ = _template(config, 1, 2, weights)
        assert all((s.frequency_weights is not None) == expected for s in states)


def test_resume_with_another_sampling_names_the_strategy(checkpoint):
    """A checkpoint resumed with a strategy that samples otherwise than the run's (its
    states hold sampling weights or not): a message naming `strategy`, not a
    tree-structure mismatch."""
    folder, stratified = checkpoint
    # The other sampling than the run's; the checkpoint is left as it was.
    sampling = "uniform" if stratified else "stratified"
    strategy = cfconv.Sparse(num=64, rate=0.1, sampling=sampling)
    _, _, metadata = load_trained_model(folder)
    config = TrainConfig.from_json({**metadata["config"], "epochs": 2})
    with pytest.raises(ValueError, match="`strategy`"):
        fit(config, _stripes(24), _stripes(9, seed=1), checkpoint_dir=folder, resume=True,
            log=None, strategy=strategy)  # fmt: skip
