"""The documentation: its examples run as written, and it covers the package.

Every Markdown page of the README and of `docs/` whose Python blocks are
fenced as ```python runs here, one test per page: the page's blocks in order,
in one namespace, in a fresh working directory. A page's check then asserts
what its text claims of the output (the printed figures, the files written).
Fragments fenced as ```py do not run, and only those listed in `FRAGMENTS`
may be: the examples that need several devices or machines
(tests/test_distributed.py runs their equivalents), the crash-safe callback
list (tests/test_crash_safety.py runs it, killed and resumed) and the call on
a KerasHub causal LM (tests/test_oneshot.py prunes a KerasHub GPT-2). Pages
that include the README's blocks (`--8<--`) hold no block of their own, so
each example runs once.

The site itself is built by `mkdocs build --strict` in CI (broken links,
anchors and references fail it); the API reference's coverage of the public
names and the README's length are checked here, without MkDocs.
"""

import gzip
import json
import re
import types
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasreg
from tests.conftest import to_numpy

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"```python\n(.*?)```", flags=re.S)
# Every fence's language; a block in any other would be neither run nor refused.
LANGUAGES = {"python", "py", "bash", "text", "pycon", ""}
# The fragments that do not run, per page.
FRAGMENTS = {
    "docs/guides/crash-safety.md": 1,
    "docs/guides/distributed.md": 2,
    "docs/guides/one-shot.md": 1,
}


def _pages():
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    return [page for page in pages if FENCE.search(page.read_text())]


PAGES = {page.relative_to(ROOT).as_posix(): page for page in _pages()}


def _check_readme(out, tmp_path, namespace):
    model, reloaded, x = namespace["model"], namespace["reloaded"], namespace["x"]
    # The printed report is the model's own, and the prox left exact zeros.
    report = kerasreg.sparsity_report(model)
    assert str(report) in out
    assert sum(row.zeros for row in report) > 0
    assert isinstance(reloaded.optimizer, kerasreg.ProximalOptimizer)
    np.testing.assert_array_equal(to_numpy(reloaded(x)), to_numpy(model(x)))


def _check_proximal_optimizer(out, tmp_path, namespace):
    kernel = namespace["kernel"]
    # Keras' own L1 under the wrapper: the unread inputs are exactly zero,
    # the two read ones are not (the Lasso's support).
    assert np.all(kernel[2:] == 0) and np.all(kernel[:2] != 0)
    assert "exact zeros: 18 of 20" in out
    assert "ElasticNet(strength=1.0, l1_ratio=0.25)" in out


def _check_mcp_scad(out, tmp_path, namespace):
    # MCP's firm thresholding, in closed form: |w| <= step * strength goes
    # to 0; up to gamma * strength, (|w| - step * strength) / (1 - step /
    # gamma) with the sign; beyond it, w itself.
    strength, gamma, step = 0.1, 3.0, 1.0
    w = np.array([0.05, -0.2, 1.5])
    shrunk = np.sign(w) * (np.abs(w) - step * strength) / (1 - step / gamma)
    firm = np.where(np.abs(w) <= gamma * strength, shrunk, w)
    expected = np.where(np.abs(w) <= step * strength, 0.0, firm)
    printed = re.search(r"^\[(.*)\]$", out, flags=re.M).group(1)
    np.testing.assert_allclose([float(v) for v in printed.split(",")], expected, atol=1e-4)


def _check_regularize(out, tmp_path, namespace):
    assert len(namespace["model"].losses) == 2  # one penalty per regularized kernel
    assert re.search(r"^2$", out, flags=re.M)
    # The layers' configs hold the penalties: plain load_model gets them back.
    reloaded = keras.models.load_model(tmp_path / "regularized_model.keras")
    assert isinstance(reloaded.get_layer("conv").kernel_regularizer, kerasreg.L1)
    head = reloaded.get_layer("head").kernel_regularizer
    assert isinstance(head, kerasreg.GroupLasso) and head.group_axis == 0


def _check_sparsity(out, tmp_path, namespace):
    keys = "['sparsity', 'sparsity/hidden/kernel', 'sparsity/out/kernel']"
    assert keys in out
    assert re.search(r"^32 True$", out, flags=re.M)  # structured magnitude pruning
    first, last = map(float, re.search(r"^global: \[(.*), (.*)\]$", out, flags=re.M).groups())
    assert (64 * 128 * first + 128 * 10 * last) / (64 * 128 + 128 * 10) == pytest.approx(
        0.9, abs=1e-3
    )
    assert first > last  # one threshold, not 90% of each kernel


def _check_feature_selection(out, tmp_path, namespace):
    assert "['x0', 'x1', 'x2']" in out
    assert re.search(r"^True$", out, flags=re.M)  # same predictions after compact
    assert (tmp_path / "small_model.keras").exists()


def _check_residual_pruning(out, tmp_path, namespace):
    stream = re.search(r"^stream: 128 -> (\d+) channels$", out, flags=re.M)
    assert stream and 0 < int(stream.group(1)) < 128  # whole stream channels removed
    model, small, x = namespace["model"], namespace["small"], namespace["x"]
    np.testing.assert_allclose(
        to_numpy(small(x[:64])), to_numpy(model(x[:64])), rtol=1e-4, atol=1e-4
    )


def _check_prune_to_a_speed(out, tmp_path, namespace):
    ratio = float(re.search(r"^MACs: ([0-9.]+) of the dense", out, flags=re.M).group(1))
    # The target asked for is half the MACs; a channel is the unit, so the
    # model lands at or just under it.
    assert 0.4 < ratio <= 0.5


def _check_one_shot(out, tmp_path, namespace):
    errors = dict(
        re.findall(r"^(magnitude|wanda|sparsegpt): 80% zeros, error ([0-9.]+), accuracy", out, re.M)
    )
    assert float(errors["sparsegpt"]) < float(errors["wanda"]) < float(errors["magnitude"])
    assert re.search(r"^0\.80$", out, flags=re.M)  # every zero held while fine-tuning


def _check_shipping(out, tmp_path, namespace):
    before, after = map(int, re.search(r"^(\d+) -> (\d+)$", out, flags=re.M).groups())
    assert after < before  # group lasso removed hidden units
    assert after == namespace["plain"].count_params()
    # For a machine without kerasreg: nothing in the file names it.
    with zipfile.ZipFile(tmp_path / "digits_small.keras") as archive:
        config = json.loads(archive.read("config.json"))
    assert "kerasreg" not in json.dumps(config)


def _check_file_sizes(out, tmp_path, namespace):
    shipped = namespace["shipped"]
    kernels = [to_numpy(layer.kernel) for layer in shipped.layers]
    assert all(np.mean(kernel == 0) >= 0.9 for kernel in kernels)
    # The same model with dense weights, saved the same way: the zeros are
    # what makes the file compressible.
    dense = keras.models.clone_model(shipped)
    rng = np.random.default_rng(0)
    dense.set_weights([rng.normal(size=w.shape) for w in shipped.get_weights()])
    dense.save(tmp_path / "dense.keras")
    dense_gz = len(gzip.compress((tmp_path / "dense.keras").read_bytes(), compresslevel=9))
    assert (tmp_path / "pruned_model.keras.gz").stat().st_size < dense_gz / 3


def _check_cross_validation(out, tmp_path, namespace):
    assert "one SE: l1_ratio=" in out
    cv = namespace["cv"]
    assert cv.one_se["strength"] >= cv.best["strength"]  # the sparser side of the best


def _check_custom_layers(out, tmp_path, namespace):
    assert (tmp_path / "gated.keras").exists()
    assert "reloaded predictions equal: True" in out
    assert "regularizers kept: True" in out
    model = namespace["model"]
    weights = {v.path: to_numpy(v) for v in model.weights}
    # The printed report is the model's: its exact-zero count, weight by weight.
    report = kerasreg.sparsity_report(model)
    assert str(report) in out
    for row in report:
        path = f"{model.name}/{row.key}"
        assert row.zeros == np.count_nonzero(weights[path] == 0)
    assert report["gated/kernel"].zeros > 0
    assert report["out/kernel"].zeros == 0
    # Whole groups: rows of the gate kernel, one per input; the gating input stays.
    gate = weights[f"{model.name}/gated/gate_kernel"]
    assert report["gated/gate_kernel"].zero_inputs == np.count_nonzero(np.all(gate == 0, axis=1))
    assert report["gated/gate_kernel"].zero_inputs >= 5
    reads = np.flatnonzero(np.any(gate != 0, axis=1)).tolist()
    assert f"inputs the gate reads: {reads}" in out
    assert 2 in reads


CHECKS = {
    "README.md": _check_readme,
    "docs/guides/proximal-optimizer.md": _check_proximal_optimizer,
    "docs/guides/mcp-scad.md": _check_mcp_scad,
    "docs/guides/regularize.md": _check_regularize,
    "docs/guides/sparsity.md": _check_sparsity,
    "docs/guides/feature-selection.md": _check_feature_selection,
    "docs/guides/residual-pruning.md": _check_residual_pruning,
    "docs/guides/prune-to-a-speed.md": _check_prune_to_a_speed,
    "docs/guides/one-shot.md": _check_one_shot,
    "docs/guides/shipping.md": _check_shipping,
    "docs/guides/file-sizes.md": _check_file_sizes,
    "docs/guides/cross-validation.md": _check_cross_validation,
    "docs/custom_layers.md": _check_custom_layers,
}


@pytest.mark.parametrize("name", sorted(PAGES))
def test_python_blocks_run(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs"}
    for block in FENCE.findall(PAGES[name].read_text()):
        exec(compile(block, name, "exec"), namespace)
    out = capsys.readouterr().out
    CHECKS[name](out, tmp_path, namespace)


@pytest.mark.backend_neutral
def test_every_page_with_examples_has_a_check():
    # A page whose examples print figures says what they should be; a check
    # whose page lost its examples would pass without running anything.
    assert set(PAGES) == set(CHECKS)


@pytest.mark.backend_neutral
def test_every_block_is_run_or_a_listed_fragment():
    fragments = {}
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        name = page.relative_to(ROOT).as_posix()
        text = page.read_text()
        assert "\r" not in text, f"{name}: CRLF line endings hide its blocks"
        fences = re.findall(r"^[ \t]*(?:```|~~~)(.*)$", text, flags=re.M)
        languages = fences[::2]  # each block opens and closes
        assert set(languages) <= LANGUAGES, (name, set(languages) - LANGUAGES)
        assert languages.count("python") == len(FENCE.findall(text)), name
        if "py" in languages:
            fragments[name] = languages.count("py")
    assert fragments == FRAGMENTS


@pytest.mark.backend_neutral
def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; guides go in docs/"


def _entries(page):
    return re.findall(r"^::: (\S+)$", page.read_text(), flags=re.M)


@pytest.mark.backend_neutral
def test_api_reference_has_an_entry_for_every_public_name():
    modules = {
        name: getattr(kerasreg, name)
        for name in kerasreg.__all__
        if isinstance(getattr(kerasreg, name), types.ModuleType)
    }
    documented = {}
    for name, module in modules.items():
        page = DOCS / "api" / f"{name}.md"
        assert page.exists(), f"no API page for kerasreg.{name}"
        entries = _entries(page)
        assert entries[0] == f"kerasreg.{name}"  # the module's own docstring first
        assert sorted(entries[1:]) == sorted(f"kerasreg.{name}.{n}" for n in module.__all__)
        for member in module.__all__:
            documented[id(getattr(module, member))] = member
    index = _entries(DOCS / "api" / "index.md")
    for name in kerasreg.__all__:
        if name in modules:
            continue
        obj = getattr(kerasreg, name)
        # A top-level name is documented where its module lists it, or on the index.
        assert id(obj) in documented or f"kerasreg.{name}" in index, name
    # Every API page is in the site's navigation.
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((DOCS / "api").glob("*.md")):
        assert f"api/{page.name}" in nav, page.name
