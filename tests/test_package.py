"""The public surface and the package's import-time behaviour."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import kerasreg
from tests.conftest import BACKEND

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.backend_neutral
def test_public_surface_is_pinned():
    # A rename or removal must fail here, loudly, before it reaches users.
    assert sorted(kerasreg.__all__) == [
        "ChannelPruning",
        "CoupledGroupLasso",
        "Distiller",
        "ElasticNet",
        "FeatureGate",
        "FreezeSparsity",
        "GroupLasso",
        "InvalidArgumentError",
        "L1",
        "L2",
        "MCP",
        "MagnitudePruning",
        "ProximalOptimizer",
        "ProximalRegularizer",
        "SCAD",
        "SparsityMonitor",
        "TargetSparsity",
        "allocate_sparsity",
        "apply",
        "callbacks",
        "compact",
        "compaction",
        "cost",
        "dependency",
        "dependency_groups",
        "deployment",
        "distillation",
        "layers",
        "model_cost",
        "model_selection",
        "oneshot",
        "oneshot_prune",
        "optimizers",
        "prox",
        "regularize",
        "regularizers",
        "sparsity",
        "sparsity_report",
        "strip",
    ]
    assert kerasreg.optimizers.__all__ == ["ProximalOptimizer"]
    assert sorted(kerasreg.regularizers.__all__) == [
        "ChannelPruning",
        "CoupledGroupLasso",
        "ElasticNet",
        "GroupLasso",
        "KeepZeros",
        "L1",
        "L2",
        "MCP",
        "MagnitudePruning",
        "ProximalRegularizer",
        "SCAD",
        "get",
    ]
    assert sorted(kerasreg.prox.__all__) == [
        "block_soft_threshold",
        "block_soft_threshold_diagonal",
        "project_group_sparsity",
        "project_n_m",
        "project_sparsity",
        "prox_elastic_net",
        "prox_mcp",
        "prox_scad",
        "prox_squared_l2",
        "soft_threshold",
    ]
    assert sorted(kerasreg.callbacks.__all__) == [
        "FreezeSparsity",
        "SparsityMonitor",
        "TargetSparsity",
    ]
    assert sorted(kerasreg.sparsity.__all__) == [
        "SparsityReport",
        "WeightSparsity",
        "allocate_sparsity",
        "sparsity_report",
    ]
    assert sorted(kerasreg.layers.__all__) == ["FeatureGate", "SelectFeatures"]
    assert sorted(kerasreg.compaction.__all__) == [
        "CompactionSummary",
        "LayerCompaction",
        "compact",
    ]
    assert kerasreg.apply.__all__ == ["regularize"]
    assert sorted(kerasreg.dependency.__all__) == [
        "DependencyGroup",
        "GroupMember",
        "dependency_groups",
        "register_layer_rule",
    ]
    assert kerasreg.deployment.__all__ == ["strip"]
    assert kerasreg.distillation.__all__ == ["Distiller"]
    assert sorted(kerasreg.cost.__all__) == ["GroupCost", "ModelCost", "model_cost"]
    assert sorted(kerasreg.oneshot.__all__) == ["LayerPruning", "OneShotReport", "oneshot_prune"]
    assert sorted(kerasreg.model_selection.__all__) == [
        "CrossValidatedPath",
        "RegularizationPath",
        "cross_validate_path",
        "regularization_path",
    ]
    modules = (
        kerasreg,
        kerasreg.regularizers,
        kerasreg.prox,
        kerasreg.optimizers,
        kerasreg.callbacks,
        kerasreg.sparsity,
        kerasreg.layers,
        kerasreg.compaction,
        kerasreg.apply,
        kerasreg.deployment,
        kerasreg.model_selection,
        kerasreg.oneshot,
    )
    for module in modules:
        for name in module.__all__:
            assert getattr(module, name) is not None
    assert kerasreg.L1 is kerasreg.regularizers.L1
    assert kerasreg.MCP is kerasreg.regularizers.MCP
    assert kerasreg.SCAD is kerasreg.regularizers.SCAD
    assert kerasreg.regularize is kerasreg.apply.regularize


@pytest.mark.backend_neutral
def test_version_matches_the_package_metadata():
    from importlib import metadata

    assert kerasreg.__version__ == metadata.version("kerasreg")


@pytest.mark.backend_neutral
def test_core_dependencies_are_keras_and_numpy_only():
    from importlib import metadata

    core, extras = [], set()
    for requirement in metadata.requires("kerasreg"):
        name = re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0]
        marker = re.search(r'extra == "([^"]+)"', requirement)
        if marker:
            extras.add(marker.group(1))
        else:
            core.append(name)
    assert sorted(core) == ["keras", "numpy"]
    assert {"tensorflow", "jax", "torch", "test", "tutorials", "docs"} <= extras


def test_import_has_no_side_effects():
    # In a fresh interpreter on the current backend: importing kerasreg sets
    # no environment variable, keeps the backend, and imports TensorFlow
    # only when Keras itself runs on TensorFlow.
    script = textwrap.dedent(
        """
        import os, sys, json
        import keras
        before_env = dict(os.environ)
        before_modules = set(sys.modules)
        import kerasreg
        new = sorted(set(sys.modules) - before_modules)
        print(json.dumps({
            "env_changed": dict(os.environ) != before_env,
            "backend": keras.backend.backend(),
            "floatx": keras.config.floatx(),
            "tensorflow": "tensorflow" in sys.modules,
            "new_third_party": sorted({m.split(".")[0] for m in new} - {"kerasreg"}),
        }))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["env_changed"] is False
    assert report["backend"] == BACKEND
    assert report["floatx"] == "float32"
    assert report["tensorflow"] is (BACKEND == "tensorflow")
    # kerasreg itself pulls in nothing beyond what `import keras` loaded,
    # except standard-library modules.
    stdlib = set(sys.stdlib_module_names)
    assert [m for m in report["new_third_party"] if m not in stdlib] == []
