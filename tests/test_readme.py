"""The README's Python examples run as written.

Blocks fenced as ```python run here. Fragments fenced as ```py do not: the
examples that need several devices or machines (tests/test_distributed.py
runs their equivalents) and the crash-safe callback list
(tests/test_crash_safety.py runs it, killed and resumed).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "ElasticNet(strength=1.0, l1_ratio=0.25)" in out
    assert (tmp_path / "sparse_model.keras").exists()
    assert (tmp_path / "regularized_model.keras").exists()
    assert "['x0', 'x1', 'x2']" in out
    assert (tmp_path / "small_model.keras").exists()
    assert (tmp_path / "digits_small.keras").exists()
    stream = re.search(r"^stream: 128 -> (\d+) channels$", out, flags=re.M)
    assert stream and 0 < int(stream.group(1)) < 128  # whole stream channels removed
    before, after = map(int, re.search(r"^(\d+) -> (\d+)$", out, flags=re.M).groups())
    assert after < before  # group lasso removed hidden units
    assert (tmp_path / "pruned_model.keras.gz").exists()
    assert "one SE: l1_ratio=" in out
    assert re.search(r"^32 True$", out, flags=re.M)  # structured magnitude pruning
    first, last = map(float, re.search(r"^global: \[(.*), (.*)\]$", out, flags=re.M).groups())
    assert (64 * 128 * first + 128 * 10 * last) / (64 * 128 + 128 * 10) == pytest.approx(
        0.9, abs=1e-3
    )
    assert first > last  # one threshold, not 90% of each kernel
    oneshot = dict(
        re.findall(r"^(magnitude|wanda|sparsegpt): 80% zeros, error ([0-9.]+), accuracy", out, re.M)
    )
    assert float(oneshot["sparsegpt"]) < float(oneshot["wanda"]) < float(oneshot["magnitude"])
    assert re.search(r"^0\.80$", out, flags=re.M)  # every zero held while fine-tuning
