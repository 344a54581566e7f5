"""`cfconv compare` and `cfconv.experiments.compare_seeds`: paired runs over seeds."""

import io
import json

import numpy as np
import pytest

from cfconv import cli
from cfconv.data import Dataset, train_val_split
from cfconv.experiments import _compare, compare_seeds, format_comparison
from cfconv.train import NonFiniteLossError, TrainConfig, fit
from helpers import checker_modes, raises_naming


def _stripes(n: int = 48, size: int = 8) -> Dataset:
    """Horizontal or vertical stripes in noise: two classes a small net learns."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    along = np.where(labels[:, None, None] == 1, rows[None], cols[None])
    images = 128 + 70 * np.sin(2 * np.pi * along / 4 + rng.uniform(0, 6, (n, 1, 1)))
    images = np.clip(images + rng.normal(0, 25, images.shape), 0, 255)[..., None]
    return Dataset(images.astype(np.uint8), labels.astype(np.int32), ("v", "h"))


# Uniform positions and noise initial kernels: fewer functions to compile than the defaults.
CONFIG = TrainConfig(model="hw", width=4, depth=2, image_size=8, batch_size=8, epochs=1,
                     sampling="uniform", state_init="uniform")  # fmt: skip


def test_compare_seeds_pairs_runs_on_the_same_split(tmp_path):
    data = _stripes()
    out = tmp_path / "compare.json"
    result = compare_seeds(CONFIG, data, [3, 0], out=out, log=None)
    assert result["seeds"] == [3, 0] and result["baseline"] == "spatial"
    # Each run is the run `fit` makes alone on its seed's split (checked for seed 0).
    train, val = train_val_split(data, val_fraction=0.2, seed=0)
    for model in ("spatial", "hw"):
        assert [r["config"]["seed"] for r in result["runs"][model]] == [3, 0]
        config = TrainConfig(**{**CONFIG.__dict__, "model": model, "seed": 0})
        alone = fit(config, train, val, log=None)
        assert result["val_acc"][model][1] == alone["val_acc"]
        assert result["runs"][model][1]["epochs"][0]["train_loss"] == pytest.approx(
            alone["epochs"][0]["train_loss"], rel=1e-6
        )
    base, model = (np.array(result["val_acc"][m]) for m in ("spatial", "hw"))
    summary = result["summary"]
    assert summary["spatial"]["mean"] == pytest.approx(base.mean())
    assert summary["hw"]["sd"] == pytest.approx(model.std(ddof=1))
    d = model - base
    assert summary["difference"]["mean"] == pytest.approx(d.mean())
    assert summary["difference"]["sd"] == pytest.approx(d.std(ddof=1))
    assert summary["difference"]["standard_error"] == pytest.approx(d.std(ddof=1) / np.sqrt(2))
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))


def test_format_comparison():
    result = {
        "baseline": "spatial",
        "config": {"model": "hw_cin_cout"},
        "seeds": [0, 1],
        "runs": {"spatial": [{"params": 10}] * 2, "hw_cin_cout": [{"params": 20}] * 2},
        "val_acc": {"spatial": [0.9, 0.8], "hw_cin_cout": [0.85, 0.81]},
        "summary": {
            "spatial": {"mean": 0.85, "sd": 0.0707},
            "hw_cin_cout": {"mean": 0.83, "sd": 0.0283},
            "difference": {"mean": -0.02, "sd": 0.0424, "standard_error": 0.03},
        },
    }
    text = format_comparison(result)
    assert "| seed | spatial (10 parameters) | hw_cin_cout (20 parameters) |" in text
    assert "| 0 | 0.9000 | 0.8500 | -5.00 |" in text
    assert "| 1 | 0.8000 | 0.8100 | +1.00 |" in text
    assert "| mean | 0.8500 | 0.8300 | -2.00 |" in text
    assert "-2.00 points on average over 2 seeds, standard error 3.00" in text
    one = {**result, "seeds": [0]}
    one["val_acc"] = {"spatial": [0.9], "hw_cin_cout": [0.85]}
    one["summary"] = {
        "spatial": {"mean": 0.9, "sd": None},
        "hw_cin_cout": {"mean": 0.85, "sd": None},
        "difference": {"mean": -0.05, "sd": None, "standard_error": None},
    }
    text = format_comparison(one)
    assert "| sd |  |  |  |" in text and "over 1 seed\n" in text + "\n"
    assert "standard error" not in text


def test_an_interrupted_comparison_keeps_its_finished_pairs(tmp_path, monkeypatch):
    """A non-finite loss in the third run (seed 1's baseline) stops the comparison; the
    error names the run, and the file and the error hold seed 0's pair."""
    calls = []

    def fake_fit(config, train, val, **kwargs):
        calls.append((config.model, config.seed))
        if len(calls) == 3:
            raise NonFiniteLossError("the loss is nan")
        return {"config": config.to_json(), "params": 1, "epochs": [],
                "val_acc": 0.5 if config.model == "spatial" else 0.25}  # fmt: skip

    monkeypatch.setattr(_compare, "fit", fake_fit)
    out, log = tmp_path / "c.json", io.StringIO()  # any text stream passes the checker
    with pytest.raises(NonFiniteLossError, match="spatial, seed 1: the loss is nan") as info:
        compare_seeds(CONFIG, _stripes(20), [0, 1], out=out, log=log)
    assert calls == [("spatial", 0), ("hw", 0), ("spatial", 1)]
    assert log.getvalue().splitlines() == ["== spatial, seed 0 ==", "== hw, seed 0 ==",
                                           "== spatial, seed 1 =="]  # fmt: skip
    saved = json.loads(out.read_text())
    for partial in (saved, info.value.result):
        assert partial["val_acc"] == {"spatial": [0.5], "hw": [0.25]}
        assert partial["summary"]["difference"]["mean"] == pytest.approx(-0.25)
        assert partial["summary"]["difference"]["sd"] is None


def test_compare_seeds_rejects_a_folder_for_out(tmp_path):
    with pytest.raises(ValueError, match="`out`"):
        compare_seeds(CONFIG, _stripes(8), [0], out=tmp_path, log=None)


@checker_modes
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(seeds=[]), "seeds"),
        (dict(seeds=[1, 1]), "seeds"),
        (dict(seeds=[-1]), "seeds"),
        (dict(seeds=[0], baseline="hw"), "baseline"),
        (dict(seeds=[0], baseline="resnet"), "baseline"),
    ],
)
def test_compare_seeds_rejects_bad_input(kwargs, name, checker):
    with raises_naming(name, ValueError, checker=checker):
        compare_seeds(CONFIG, _stripes(8), log=None, **kwargs)


def test_cli_compare(tmp_path, capsys):
    out = tmp_path / "c.json"
    argv = ["compare", "--model", "hw", "--width", "4", "--depth", "2", "--epochs", "1",
            "--max-per-class", "10", "--seeds", "2", "--sampling", "uniform",
            "--state-init", "uniform", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "| 2 |" in text and "hw - spatial:" in text and "over 1 seed" in text
    result = json.loads(out.read_text())
    assert result["seeds"] == [2] and len(result["runs"]["hw"]) == 1
    assert result["config"]["sampling"] == "uniform"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "1,1"], "--seeds"),
        (["--seeds", "-1"], "--seeds"),
        (["--seeds", "a"], "--seeds"),
        (["--baseline", "hw_cin_cout"], "--baseline"),
        (["--checkpoint", "x"], "--checkpoint"),
        (["--rate", "0"], "--rate"),
    ],
)
def test_cli_compare_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["compare", "--max-per-class", "2", *argv])
    assert info.value.code != 0
    assert message in capsys.readouterr().err + str(info.value.code)
