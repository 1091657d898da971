"""A build that cannot be trusted fails or warns (issue 9 items 5, 8 and 12), and the checks behind it.

Unit tests of pipeline.build_checks, then real builds of small models made to go
wrong: an artifact whose output ignores its input (exit 1, said in the terminal
and in report.json), data without the highest class id (a warning, not a
refusal), inputs scaled to 1e30 (the data named, not the pruning schedule).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgesparse.cli.commands import main
from edgesparse.data import Dataset
from edgesparse.errors import DataError
from edgesparse.pipeline.build_checks import (
    DEFAULT_MIN_AGREEMENT,
    artifact_failures,
    at_chance,
    chance_level,
    check_dense_outputs,
    check_npu_quantize,
    check_options,
    dense_model_warnings,
    mcu_compression_mode,
    output_ignores_input,
    untrusted_in_report,
)

# --------------------------------------------------------------------------- the checks (no TensorFlow)


def test_an_output_that_ignores_the_input_is_found():
    rng = np.random.default_rng(0)
    assert output_ignores_input(np.tile([[0.49609375, 0.50390625]], (32, 1)))   # the MobileNetV2 .tflite's output
    assert output_ignores_input(np.zeros((5, 3)))
    assert not output_ignores_input(rng.random((32, 2)))
    assert not output_ignores_input(np.tile([[0.5, 0.5]], (1, 1)))                 # one input proves nothing
    varied = np.tile([[0.5, 0.5]], (8, 1))
    varied[3, 0] += 1 / 256                                                        # one int8 step is a dependence
    assert not output_ignores_input(varied)


def test_artifact_failures_name_the_cause_and_the_flag():
    constant = np.tile([[0.25, 0.75]], (10, 1))
    failures = artifact_failures(agreement=1.0, outputs=constant, n_samples=10, min_agreement=0.9)
    assert len(failures) == 1 and "does not depend on its input" in failures[0] and "0.25, 0.75" in failures[0]
    low = artifact_failures(agreement=0.0, outputs=np.random.default_rng(1).random((10, 2)), n_samples=10,
                            min_agreement=DEFAULT_MIN_AGREEMENT)
    assert low == ["the .tflite agrees with the pruned Keras model on 0.00% of 10 validation inputs, below "
                   "--min-agreement 0.9"]
    assert artifact_failures(agreement=0.9, outputs=None, n_samples=10, min_agreement=0.9) == []
    assert artifact_failures(agreement=0.5, outputs=None, n_samples=10, min_agreement=0.0) == []


def test_a_cached_report_is_judged_at_the_current_threshold():
    report = {"accuracy": {"agreement_pruned_keras_vs_tflite": 0.85, "n_samples": 20},
              "failures": ["the .tflite's output does not depend on its input: all 20 ...", "accuracy drop 3"]}
    found = untrusted_in_report(report, 0.9)
    assert len(found) == 2 and "does not depend" in found[0] and "85.00%" in found[1]
    assert untrusted_in_report({"accuracy": {"agreement_pruned_keras_vs_tflite": 1.0}, "failures": []}, 0.9) == []


def test_chance_is_the_majority_share_within_two_standard_errors():
    y = np.array([0] * 16 + [1] * 16)
    assert chance_level(y) == 0.5
    assert at_chance(0.5, y) and at_chance(0.6, y) and not at_chance(0.7, y)
    assert chance_level(np.array([0, 0, 0, 1])) == 0.75


class BatchNormalization:  # what the check looks for: the layer's class name, at any depth
    pass


class _Model:
    def __init__(self, *layers):
        self.layers = list(layers)


def _dataset(y_train, y_val, labels=None):
    return Dataset(np.zeros((len(y_train), 4), np.float32), np.asarray(y_train), np.zeros((len(y_val), 4), np.float32),
                   np.asarray(y_val), num_classes=3, source="d.npz", labels=labels)


def test_a_dense_model_at_chance_warns_with_the_likely_cause():
    data = _dataset([0, 1, 2] * 10, [0, 1] * 16)
    (warning,) = dense_model_warnings(_Model(_Model(BatchNormalization())), data, 2, accuracy=0.5)
    assert "at chance before pruning" in warning and "BatchNormalization" in warning and "docs/data.md" in warning
    (warning,) = dense_model_warnings(_Model(), data, 2, accuracy=0.5)
    assert "at chance" in warning and "untrained" in warning and "BatchNormalization" not in warning
    assert dense_model_warnings(_Model(), data, 2, accuracy=0.95) == []


def test_a_class_absent_from_the_data_is_a_warning():
    data = _dataset([0, 1] * 10, [0, 1] * 5, labels=["cat", "dog", "bird"])
    warnings = dense_model_warnings(_Model(), data, 3, accuracy=1.0)
    assert len(warnings) == 2
    assert "2 (bird)" in warnings[0] and "y_train" in warnings[0] and "fine-tuning never sees" in warnings[0]
    assert "y_val" in warnings[1]


def test_non_finite_dense_outputs_blame_the_data_scale():
    data = _dataset([0, 1], [0, 1])
    data.x_val[:] = 1e30
    with pytest.raises(DataError, match="NaN or infinite") as info:
        check_dense_outputs(np.array([[np.nan, np.nan], [0.5, 0.5]]), data)
    assert "1e+30" in str(info.value) and "far beyond" in str(info.value) and "Scale the inputs" in str(info.value)
    check_dense_outputs(np.array([[0.1, 0.9]]), data)


@pytest.mark.parametrize("kwargs, flag", [
    (dict(epochs=0), "--epochs"), (dict(batch_size=-1), "--batch-size"), (dict(min_params=-1), "--min-params"),
    (dict(min_agreement=1.5), "--min-agreement"), (dict(min_agreement=float("nan")), "--min-agreement"),
])
def test_options_a_library_caller_may_pass_are_refused_by_flag(kwargs, flag):
    options = dict(tensorboard=None, min_agreement=0.9, epochs=1, batch_size=1, min_params=0) | kwargs
    with pytest.raises(DataError) as info:
        check_options(**options)
    assert flag in str(info.value)


def test_tensorboard_must_be_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    base = dict(min_agreement=0.9, epochs=1, batch_size=1, min_params=0)
    for bad in (tmp_path / "file", tmp_path / "file" / "logs"):
        with pytest.raises(DataError, match="--tensorboard"):
            check_options(tensorboard=bad, **base)
    check_options(tensorboard=tmp_path / "new" / "logs", **base)
    check_options(tensorboard=tmp_path, **base)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_an_untrusted_artifact_is_exit_1_with_what_to_try(tmp_path):
    from edgesparse.errors import EXIT_BUDGET, BudgetExceeded
    from edgesparse.pipeline.build import BuildResult, raise_for_failures

    low = "the .tflite agrees with the pruned Keras model on 40.00% of 10 validation inputs, below --min-agreement 0.9"
    constant = "the .tflite's output does not depend on its input: all 10 validation inputs give the same output [1]"
    for failures, mentions_threshold in (([low], True), ([constant], False)):
        with pytest.raises(BudgetExceeded) as info:
            raise_for_failures(BuildResult(tmp_path, {}, failures=failures))
        message = str(info.value)
        assert info.value.exit_code == EXIT_BUDGET and "cannot be trusted" in message and "--quantize none" in message
        assert ("lower --min-agreement" in message) is mentions_threshold


# --------------------------------------------------------------------------- real builds that go wrong


def _keras():
    from edgesparse.pipeline.tf_env import import_tf

    return import_tf()[1]


def _save_data(path, x_train, y_train, x_val, y_val):
    np.savez(path, x_train=x_train.astype(np.float32), y_train=y_train, x_val=x_val.astype(np.float32), y_val=y_val)
    return path


def _build(tmp_path, model, data, *extra):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["build", "--model", str(model), "--data", str(data), "--profile", "rpi4",
                                       "--epochs", "1", "--out", str(out), *extra])
    return result, " ".join(result.output.split()), out


def _learnable(n, classes, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    prototypes = rng.normal(size=(classes, 16))
    return (prototypes[y] + 0.1 * rng.normal(size=(n, 16))) * scale, y


@pytest.mark.slow
def test_an_artifact_whose_output_ignores_the_input_fails_the_build(tmp_path):
    """A frozen all-zero first layer: every input reaches the rest of the model as the same vector."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    zero = keras.layers.Dense(64, kernel_initializer="zeros", bias_initializer="ones", trainable=False,
                              name="zeroed")(inputs)
    hidden = keras.layers.Dense(64, activation="relu", name="hidden")(zero)
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(2, name="logits")(hidden)))
    model.save(tmp_path / "constant.keras")
    x, y = _learnable(96, 2)
    data = _save_data(tmp_path / "d.npz", x[:64], y[:64], x[64:], y[64:])

    result, output, out = _build(tmp_path, tmp_path / "constant.keras", data, "--max-accuracy-drop", "100")
    assert result.exit_code == 1, output
    assert "does not depend on its input" in output and "cannot be trusted" in output
    assert "--quantize none" in output                                        # what to try next
    assert "at chance before pruning" in output                               # the warning came first
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is False
    assert any("does not depend on its input" in f for f in report["failures"])
    assert any("at chance" in w for w in report["warnings"])
    assert "does not depend on its input" in (out / "report.html").read_text()


@pytest.mark.slow
def test_data_without_the_highest_class_builds_with_a_warning(tmp_path):
    """docs/data.md: the classes are the model's outputs; a class the data lacks is a warning."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, activation="relu", name="hidden"),
                              keras.layers.Dense(3, name="logits"), keras.layers.Softmax()])
    model.save(tmp_path / "three.keras")
    x, y = _learnable(192, 2)                                  # labels 0 and 1 only; the model outputs 3 classes
    data = _save_data(tmp_path / "d.npz", x[:128], y[:128], x[128:], y[128:])

    result, output, out = _build(tmp_path, tmp_path / "three.keras", data, "--max-accuracy-drop", "100",
                                 "--min-agreement", "0")
    assert result.exit_code == 0, output
    assert "output units" not in output
    assert "class(es) 2 of the model's 3 outputs have no sample in y_train" in output
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["num_classes"] == 3 and report["data"]["num_classes"] == 3
    assert (out / "labels.txt").read_text().splitlines() == ["0", "1", "2"]


@pytest.mark.slow
def test_inputs_scaled_to_1e30_blame_the_data_not_the_schedule(tmp_path):
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, activation="relu", name="hidden"),
                              keras.layers.Dense(2, name="logits"), keras.layers.Softmax()])
    model.save(tmp_path / "m.keras")
    x, y = _learnable(96, 2, scale=1e30)
    data = _save_data(tmp_path / "d.npz", x[:64], y[:64], x[64:], y[64:])

    result, output, out = _build(tmp_path, tmp_path / "m.keras", data)
    assert result.exit_code == 2, output
    assert "e+30" in output and "far beyond" in output and "Scale --data" in output, output
    assert "schedule" not in output.replace("the pruning schedule is not the cause", "")
    assert "internal error" not in output and not out.exists()


def test_ethos_u_profiles_build_without_decode_and_refuse_it_with_the_reason():
    """Vela encodes the weights itself, and DECODE custom ops would run on the CPU: off by default, refused."""
    assert mcu_compression_mode(None, "tflm+ethos-u") == "off" == mcu_compression_mode("off", "tflm+ethos-u")
    assert mcu_compression_mode(None, "tflm") == "auto"
    for mode in ("prune", "lut", "auto"):
        with pytest.raises(DataError, match="Ethos-U") as caught:
            mcu_compression_mode(mode, "tflm+ethos-u")
        assert caught.value.exit_code == 2 and "Vela compresses the weights itself" in caught.value.message


def test_cluster_is_allowed_on_ethos_u_profiles_and_only_int8_compiles():
    """Clustered values shrink Vela's encoding, so --cluster N needs no LUT there; Vela compiles int8 models."""
    check_options(tensorboard=None, min_agreement=0.9, epochs=1, batch_size=8, min_params=0, runtime="tflm+ethos-u",
                  mcu_compression=None, cluster=8)
    with pytest.raises(DataError, match="--cluster"):
        check_options(tensorboard=None, min_agreement=0.9, epochs=1, batch_size=8, min_params=0, runtime="litert",
                      cluster=8)
    check_npu_quantize("int8", "corstone_300")
    with pytest.raises(DataError, match="Ethos-U"):
        check_npu_quantize("dynamic", "corstone_300")
