"""The scripts the documentation runs, run for real (shortened)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parent.parent


# Smoke tests of whole scripts, minutes in all: CI runs them on one backend; what
# they call is tested on every backend by the other modules.
pytestmark = pytest.mark.one_backend


def test_quickstart_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "quickstart.py"), "--epochs", "2"]
        + ["--save-to", str(tmp_path)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "identical predictions: True" in result.stdout
    for layer in ("fc_300", "fc_100", "logits"):
        assert layer in result.stdout
    assert "(optimizer: ProximalOptimizer)" in result.stdout
    assert (tmp_path / "lenet_300_100_pruned.keras").exists()
    # SparsityMonitor's per-layer figures in the progress lines, and the plot.
    assert "epoch    2/2" in result.stdout and "(fc_300 " in result.stdout
    assert (tmp_path / "quickstart.png").stat().st_size > 10_000


def test_proximal_benchmark_runs(tmp_path):
    # Shortened: the LeNet-300-100 row and one small MLP in place of the
    # 5.9M and 25M ones, on this backend; the figures are not checked, only
    # that every row is printed with its fields. The peak-RSS processes are
    # tested below.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_proximal.py"), "--timing-only"]
        + ["--timing-epochs", "1", "--sizes", "16", "--steps", "2", "--size-epochs", "1"]
        + ["--budget", "0", "--no-memory"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    modes = {"tensorflow": ["xla", "graph"], "jax": ["jax.jit"], "torch": ["eager"]}[
        keras.backend.backend()
    ]
    for name, params in (("lenet-300-100", "50,610"), ("mlp-64-16-16-10", "1,482")):
        # LeNet: 64*300 + 300 + 300*100 + 100 + 100*10 + 10; the MLP: 64*16 +
        # 16 + 16*16 + 16 + 16*10 + 10. One round each, as asked.
        rows = re.findall(
            rf"^ +{name} +(\S+) +{params}( +\d+\.\d+){{3}} +1 +(\d+\.\d+) +(\d+\.\d+) +-$",
            result.stdout,
            re.M,
        )
        assert [row[0] for row in rows] == modes, result.stdout
        for _, _, adam_state, extra_state in rows:
            assert float(adam_state) > 0 and float(extra_state) >= 0


@pytest.mark.slow
def test_proximal_benchmark_measures_peak_rss(tmp_path):
    # One of the fresh processes the size table starts per optimizer, compiled
    # as the table's first row is (PyTorch eager, not torch.compile).
    jit = str(keras.backend.backend() != "torch")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_proximal.py"), "--peak-rss-child"]
        + ["mlp:16", "proximal", jit, "--steps", "2"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert re.search(r"^peak_rss_increase_kb \d+$", result.stdout, re.M), result.stdout


def test_sparsity_benchmark_runs(tmp_path):
    # Shortened: the figures are not checked here, only that the tuning on a
    # validation split, every route and the summary tables run on this backend,
    # on a tuning data set and a held-out one.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_sparsity.py"), "--epochs", "3"]
        + ["--targets", "0.5", "--skip-monitor", "--datasets", "breast_cancer", "generated"]
        + ["--tuning-datasets", "breast_cancer", "--mcp-gammas", "1", "2", "--scad-gammas", "4"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = result.stdout
    for gamma in ("1", "2"):
        tuned = rf"^tuning breast_cancer seed 0: mcp target 50% gamma {gamma}: validation"
        assert re.search(tuned, out, re.M)
    assert not re.search(r"^tuning generated", out, re.M)  # held out of the tuning
    chosen = re.search(r"^  mcp 50%: gamma (\S+) chosen$", out, re.M)
    assert chosen and chosen.group(1) in ("1", "2")
    assert re.search(r"^  scad 50%: gamma 4 chosen$", out, re.M)
    for dataset in ("breast_cancer", "generated"):
        for route in ("dense", "magnitude", "global", "erk", "2:4", "l1", "mcp", "scad"):
            assert re.search(rf"^{dataset} +{route} ", out, re.M), (dataset, route)
    # The magnitude routes' exact level.
    for route in ("magnitude", "global", "erk"):
        assert re.search(rf"{route} +target  50%: accuracy [0-9.]+, exact zeros 50.00%", out)
    assert "each route against the best route at its target" in out
    assert "best penalty route against best magnitude route" in out


def test_compaction_benchmark_runs(tmp_path):
    # Shortened: only that both networks train, compact and time on this backend.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_compact.py"), "--epochs", "1"]
        + ["--repeats", "1"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for network in ("mlp", "conv"):
        assert f"\n{network} " in result.stdout
    # The compacted models predict the labels the trained models predict.
    assert result.stdout.count(" True ") == 2


def test_structured_benchmark_runs(tmp_path):
    # Shortened (384 training rows, 2 epochs): both networks train, compact
    # and time on this backend; the script itself asserts that the compacted
    # models predict what the sparse ones do.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_structured.py"), "--epochs", "2"]
        + ["--seeds", "0", "--repeats", "1", "--fine-tune-epochs", "1", "--targets", "0.6"]
        + ["--train-samples", "384"]
        + ["--methods", "group-lasso", "channel-pruning", "group-lasso-macs", "global-l2"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for network in ("resnet", "transformer"):
        for method in (
            "GroupLasso",
            "channel-pruning l2 0.6",
            "group-lasso-macs 0.6",
            "global-l2 0.6",
        ):
            label = re.escape(f"{network} {method}")
            assert re.search(rf"^{label}.* 0 +\d\.\d{{4}} ", result.stdout, re.M), result.stdout
            assert re.search(rf"^{label}.* mean +\d\.\d{{4}} ", result.stdout, re.M)
    assert "compacted predictions equal the sparse model's: True" in result.stdout


def test_path_benchmark_runs(tmp_path):
    # Shortened: both paths, warm and cold, on this backend.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_path.py"), "--strengths", "2"]
        + ["--epochs", "1", "--warm-epochs", "1"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "== lasso" in result.stdout and "== lenet" in result.stdout
    assert result.stdout.count("cold / warm") == 2


def test_compaction_fuzzer_runs(tmp_path):
    # Shortened: a few generated models, the property checked on each.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compact_fuzz.py"), "--examples", "4"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "property held on 4 models" in result.stdout
    assert "units removed" in result.stdout


def _disk_size_rows(stdout):
    """`{(model, variant): (gzip bytes, ratio)}` from the benchmark's table."""
    rows = {}
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) == 10 and fields[1] in ("dense", "90%"):
            rows[fields[0], fields[1]] = (int(fields[5].replace(",", "")), fields[6])
    return rows


def _run_disk_size_benchmark(tmp_path, model):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_disk_size.py"), "--quick"]
        + ["--targets", "0.9", "--models", model],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    # What the file holds is printed, and the exact zeros reach the target.
    assert "model.weights.h5" in result.stdout and "compression None" in result.stdout
    assert f"{model} 90%: " in result.stdout
    assert "exact zeros 90.00% of the kernels" in result.stdout
    rows = _disk_size_rows(result.stdout)
    assert set(rows) == {(model, "dense"), (model, "90%")}
    # The property the benchmark shows: the sparse file gzips smaller.
    assert rows[model, "90%"][0] < rows[model, "dense"][0]
    assert rows[model, "dense"][1] == "1.00x"


def test_disk_size_benchmark_runs(tmp_path):
    # Shortened: LeNet-300-100 dense and at 90%, a few epochs.
    _run_disk_size_benchmark(tmp_path, "lenet_300_100")


@pytest.mark.slow
def test_disk_size_benchmark_runs_on_an_applications_model(tmp_path):
    # Shortened: a narrow MobileNetV2, two steps; compiling its training step
    # takes about a minute on TensorFlow and JAX.
    _run_disk_size_benchmark(tmp_path, "mobilenetv2")


def test_filter_route_coverage_runs():
    # Shortened to a tiny ResNet-like model (BN, an Add, a squeeze-excitation
    # gate): both normalization states compact, and the compacted model
    # predicts what the zeroed one does. The keras.applications rows and
    # their targets are tested in tests/test_compaction.py.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "filter_route_coverage.py"), "--smoke"]
        + ["--markdown"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for state in ("as built", "trained-like"):
        row = re.search(
            rf"^\| smoke \| {state} \| ([\d,]+) \| ([\d,]+) \| ([\d.]+)x \| - \| - \| - "
            r"\| (True|False) \| [\d.e+-]+ \| \d+ \| [\d.]+ \|$",
            result.stdout,
            re.M,
        )
        assert row, result.stdout
        params, after = (int(row.group(i).replace(",", "")) for i in (1, 2))
        assert after < params
        assert row.group(4) == "True"


def test_dependency_coverage_runs():
    # Shortened to the KerasHub BERT: the table row is printed and some of
    # its parameters (heads, feed-forward units) are in removable groups.
    pytest.importorskip("keras_hub")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dependency_coverage.py"), "--models", "BERT"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    row = re.search(
        r"^\| BERT .*? \| ([\d,]+) \| ([\d.]+)% \| (\d+) \((\d+)\) \| [\d.]+ \| "
        r"([\d,]+) .*?\| ([\d.e+-]+) \|$",
        result.stdout,
        re.M,
    )
    assert row, result.stdout
    assert 0 < float(row.group(2)) < 100 and 0 < int(row.group(4)) < int(row.group(3))
    # Half the feed-forward units cut: fewer parameters, the same predictions.
    params, after = (int(row.group(i).replace(",", "")) for i in (1, 5))
    assert after < params
    assert float(row.group(6)) < 1e-5


def test_torch_pruning_reference_says_what_it_needs_without_torch_pruning():
    # The reference measurement runs in its own environment (Torch-Pruning is
    # not a kerasreg dependency); here it must stop with a clear message and
    # exit status 2, not a traceback.
    code = (
        "import runpy, sys; sys.modules['torch_pruning'] = None; "
        f"sys.argv = ['torch_pruning_reference.py']; "
        f"runpy.run_path({str(ROOT / 'scripts' / 'torch_pruning_reference.py')!r}, "
        "run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Torch-Pruning" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_oneshot_benchmark_runs(tmp_path):
    # Shortened: a tiny GPT-2 trained a few steps and the digits ResNet for
    # one epoch, each pruned by every method at every setting on this
    # backend; the figures are not checked (the models are barely trained),
    # only that every row is printed with finite numbers.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_oneshot.py"), "--quick"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    number = r"(\d+\.\d+)"
    settings = {"lm": ("50%", "70%", "2:4"), "cnn": ("50%", "60%", "70%", "80%")}
    for model, labels in settings.items():
        dense = re.search(rf"^{model} +dense +- +{number} +1\.000 ", result.stdout, re.M)
        assert dense, result.stdout
        for setting in labels:
            for method in ("magnitude", "wanda", "sparsegpt"):
                found = re.search(
                    rf"^{model} +{re.escape(setting)} +{method} +{number} +{number} "
                    rf"+{number}% +{number} +{number} +{number}( +{number})?$",
                    result.stdout,
                    re.M,
                )
                assert found, (model, setting, method, result.stdout)
                value, ratio, zeros = (float(found.group(i)) for i in (1, 2, 3))
                assert value > 0 and ratio > 0, found.group(0)
                # The exact zeros are near the asked fraction (Wanda rounds per
                # output, so a small layer can be a few points off).
                asked = 50.0 if setting == "2:4" else float(setting[:-1])
                assert abs(zeros - asked) < 5, found.group(0)
    assert "held-out perplexity over 32 windows" in result.stdout
    assert result.stdout.count("peak MiB: tracemalloc") == 2
    for mode in ("none \\(float32\\)", "int8", "gptq 4-bit"):  # the 2:4 model, quantized
        assert re.search(rf"^{mode} +{number} +{number} +{number}%$", result.stdout, re.M)
    assert re.search(rf"^cnn +80% +sparsegpt .* {number}$", result.stdout, re.M)  # BN re-est.
