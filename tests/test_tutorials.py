"""The tutorial notebooks: executed fresh, and their committed outputs checked.

Each notebook runs top to bottom in a new kernel on the backend under test
(`KERAS_BACKEND` passes to the kernel), offline, on data shipped with
scikit-learn; the notebooks assert their own claims (e.g. "the same zeros as
scikit-learn"), so a claim that stops holding fails here. The pruning
notebook is built on `tf.data` and runs on the TensorFlow backend only; its
TensorFlow Datasets branch runs too, on `tfds.testing.mock_data`. The
cross-validation and compaction notebooks run on TensorFlow and JAX: as eager
PyTorch steps they take about eight and nine minutes, and what they show is
tested on PyTorch by `test_model_selection.py`, `test_layers.py`,
`test_compaction.py` and `test_custom_layers.py`. The notebook that
sparsifies a KerasHub ResNet runs on TensorFlow only: it trains a
convolutional network, which took about twice TensorFlow's time on JAX and
five times on PyTorch (two CPU cores); `test_apply.py`, `test_compaction.py`
and `test_deployment.py` test what it shows on every backend. The notebook
that prunes a GPT-2-style language model in one shot runs on TensorFlow only
too: most of its time trains the model it prunes, about 1.4 times as long on
JAX and as long again on PyTorch, and the CI budget holds one run;
`test_oneshot.py` tests `oneshot_prune` on a KerasHub GPT-2 on every backend.
"""

import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import BACKEND

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
SKIPPED = {
    ("02_pruning_lenet.ipynb", "jax"): "built on tf.data and TensorFlow Datasets",
    ("02_pruning_lenet.ipynb", "torch"): "built on tf.data and TensorFlow Datasets",
    ("03_cross_validation.ipynb", "torch"): "about 8 minutes of eager PyTorch steps",
    ("04_feature_selection_and_compaction.ipynb", "torch"): "about 9 minutes of eager steps",
    ("05_sparsify_a_model_you_have.ipynb", "jax"): "about 3.5 minutes of CPU convolutions",
    ("05_sparsify_a_model_you_have.ipynb", "torch"): "about 7.5 minutes of CPU convolutions",
    ("06_prune_a_pretrained_language_model.ipynb", "jax"): "1.4 times its time on TensorFlow",
    ("06_prune_a_pretrained_language_model.ipynb", "torch"): "a second run as long as TensorFlow's",
}

# CI runs notebook 01 on every backend, 03 and 04 on one; 02, 05 and 06 run
# on TensorFlow only (SKIPPED), whatever the CI.
ONE_BACKEND = {"03_cross_validation.ipynb", "04_feature_selection_and_compaction.ipynb"}
EXECUTIONS = [
    pytest.param(path, marks=pytest.mark.one_backend) if path.name in ONE_BACKEND else path
    for path in NOTEBOOKS
]

sys.path.insert(0, str(ROOT / "scripts"))
run_tutorials = pytest.importorskip("run_tutorials", reason="needs nbclient and nbformat")


@pytest.mark.backend_neutral
def test_every_notebook_is_found():
    assert [path.name for path in NOTEBOOKS] == [
        "01_l1_l2_elastic_net.ipynb",
        "02_pruning_lenet.ipynb",
        "03_cross_validation.ipynb",
        "04_feature_selection_and_compaction.ipynb",
        "05_sparsify_a_model_you_have.ipynb",
        "06_prune_a_pretrained_language_model.ipynb",
    ]


@pytest.mark.backend_neutral
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_outputs_are_complete_and_clean(path):
    # What readers see without running: every code cell ran, in order, on the
    # TensorFlow backend, with plots and no errors.
    notebook = json.loads(path.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert [cell["execution_count"] for cell in code] == list(range(1, len(code) + 1))
    outputs = [output for cell in code for output in cell["outputs"]]
    assert not [output for output in outputs if output["output_type"] == "error"]
    assert any("image/png" in output.get("data", {}) for output in outputs)
    text = "".join("".join(output.get("text", "")) for output in outputs)
    assert "backend tensorflow" in text
    assert "Traceback" not in text
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", EXECUTIONS, ids=lambda path: path.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    if (path.name, BACKEND) in SKIPPED:
        pytest.skip(f"{SKIPPED[path.name, BACKEND]}; runs on the TensorFlow backend")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("KERASREG_TFDS", raising=False)  # the offline path
    assert os.environ.get("KERAS_BACKEND", "tensorflow") == BACKEND
    notebook, _ = run_tutorials.execute(path)
    assert run_tutorials.errors(notebook) == []
    text = "".join(
        "".join(output.get("text", ""))
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )
    assert f"backend {BACKEND}" in text
    assert "notebook ran in" in text


# What the TensorFlow Datasets branch of the pruning notebook must produce
# from `tfds.testing.mock_data` (random examples with MNIST's real features).
_TFDS_CHECK = """
assert TFDS_NAME == "mnist", TFDS_NAME
assert (n_inputs, n_classes, EPOCHS) == (784, 10, 10)
batch_x, batch_y = next(iter(train_ds))
assert batch_x.shape == (BATCH, 784) and batch_x.dtype == tf.float32
assert 0.0 <= float(tf.reduce_min(batch_x)) and float(tf.reduce_max(batch_x)) <= 1.0
assert batch_y.dtype == tf.int64
for name, (history, accuracy, model) in runs.items():
    assert len(history["loss"]) == EPOCHS and 0.0 <= accuracy <= 1.0, name
    assert model.input_shape == (None, 784), name
print("tfds branch ok")
"""


def test_pruning_notebook_tfds_branch_on_mock_data(tmp_path, monkeypatch):
    # The notebook's own cells, from the imports to the first trainings, with
    # KERASREG_TFDS=mnist: `tfds.load` and everything after it in the input
    # pipeline run as on the real data, but on generated examples (offline).
    if BACKEND != "tensorflow":
        pytest.skip("the pruning notebook is built on tf.data; runs on the TensorFlow backend")
    pytest.importorskip("tensorflow_datasets")
    import nbformat

    path = ROOT / "tutorials" / "02_pruning_lenet.ipynb"
    notebook = nbformat.read(path, as_version=4)
    first_training = next(
        i for i, cell in enumerate(notebook.cells) if "runs = {}" in "".join(cell.source)
    )
    mock = (
        "import tensorflow_datasets as tfds\n\n"
        "_mock = tfds.testing.mock_data(num_examples=96)\n"
        "_mock.__enter__()\n"
    )
    notebook.cells = (
        [nbformat.v4.new_code_cell(mock)]
        + notebook.cells[: first_training + 1]
        + [nbformat.v4.new_code_cell(_TFDS_CHECK)]
    )
    copy = tmp_path / path.name
    nbformat.write(notebook, copy)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("KERASREG_TFDS", "mnist")
    executed, _ = run_tutorials.execute(copy)
    assert run_tutorials.errors(executed) == []
    text = "".join(
        "".join(output.get("text", ""))
        for cell in executed.cells
        for output in cell.get("outputs", [])
    )
    assert "mnist: 784 inputs, 10 classes, 10 epochs" in text
    assert "tfds branch ok" in text
