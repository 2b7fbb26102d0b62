"""Torch-Pruning's figures for "cut half of every coupled group", for docs/dependency.md.

A reference measurement only: Torch-Pruning, PyTorch, torchvision, timm and
transformers are NOT kerasreg dependencies, and this script is not part of
the test suite. Run it from a virtual environment of its own, outside the
repository, e.g.::

    python3 -m venv /tmp/tpvenv
    /tmp/tpvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/tpvenv/bin/pip install torch-pruning==1.6.1 timm transformers

(torch and torchvision must be builds of one kind: a CPU-only torch with
PyPI's CUDA torchvision fails on import with "operator torchvision::nms
does not exist". A matching pair from PyTorch's CPU index, e.g. torch
2.13.0 and torchvision 0.28.0, should do as well; the reference figures
were measured with the PyPI pair above.)

    OMP_NUM_THREADS=1 /tmp/tpvenv/bin/python scripts/torch_pruning_reference.py

For each model (random weights, 10 classes, a 1x3x32x32 input; the
transformers sized like the KerasHub models of scripts/dependency_coverage.py:
2 layers, 4 heads, hidden size 64, feed-forward 128), Torch-Pruning's
dependency graph groups the coupled channels and `BasePruner` (formerly
`MetaPruner`) with `MagnitudeImportance(p=2)`, `pruning_ratio=0.5`,
`global_pruning=False` and the final classifier in `ignored_layers` removes
half of every group in one `step()`. Attention follows Torch-Pruning's own
examples (`examples/transformers/prune_timm_vit.py`, `prune_hf_bert.py`):
`num_heads` maps the q/k/v projections to their head counts, and with the
default `--head-mode heads` half of the heads go (`prune_num_heads=True`,
`prune_head_dims=False`, `head_pruning_ratio=0.5`); `--head-mode dims`
keeps every head and halves its width instead. The table gives parameters
and MACs (`tp.utils.count_ops_and_params`) before and after, and checks
that the pruned model still runs.

    OMP_NUM_THREADS=1 /tmp/tpvenv/bin/python scripts/torch_pruning_reference.py \
        --models resnet50 vit --head-mode dims
"""

import argparse
import importlib
import os
import sys
import time
import traceback

MODEL_NAMES = (
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "densenet121",
    "convnext_tiny",
    "vit",
    "vit_tiny",
    "bert",
)

LABELS = {
    "resnet50": "ResNet50 (torchvision)",
    "mobilenet_v2": "MobileNetV2 (torchvision)",
    "mobilenet_v3_small": "MobileNetV3Small (torchvision)",
    "efficientnet_b0": "EfficientNetB0 (torchvision)",
    "densenet121": "DenseNet121 (torchvision)",
    "convnext_tiny": "ConvNeXtTiny (torchvision)",
    "vit": "ViT (timm, 2 layers, patch 8, dim 64, 4 heads, MLP 128)",
    "vit_tiny": "ViT-Tiny (timm, 2 layers, patch 8, dim 192, 3 heads)",
    "bert": "BERT (transformers, 2 layers, 4 heads, hidden 64, FF 128)",
}


def _require():
    """Imports torch and torch_pruning, or says how to get them and exits."""
    try:
        torch = importlib.import_module("torch")
        tp = importlib.import_module("torch_pruning")
    except ImportError as error:
        sys.stderr.write(
            f"torch_pruning_reference.py needs PyTorch and Torch-Pruning ({error}).\n"
            "They are not kerasreg dependencies: install them in a separate virtual\n"
            "environment, e.g.\n"
            "    python3 -m venv /tmp/tpvenv\n"
            "    /tmp/tpvenv/bin/pip install torch torchvision\n"
            "    /tmp/tpvenv/bin/pip install torch-pruning timm transformers\n"
            "and run this script with /tmp/tpvenv/bin/python.\n"
        )
        sys.exit(2)
    return torch, tp


# Each builder returns a dict: model, inputs, ignored (layers), num_heads
# (projection -> heads), after (a function run once pruned, to fix the
# attributes the forward pass reads).


def _torchvision(name, classifier):
    def build(torch):
        import torchvision

        model = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
        return {
            "model": model,
            "inputs": torch.randn(1, 3, 32, 32),
            "ignored": [classifier(model)],
            "num_heads": {},
            "after": None,
        }

    return build


def _timm_vit(embed_dim, num_heads, mlp_ratio):
    def build(torch):
        # As Torch-Pruning's timm example does: the unfused attention path.
        os.environ.setdefault("TIMM_FUSED_ATTN", "0")
        import timm
        from timm.layers import Attention

        model = timm.create_model(
            "vit_tiny_patch16_224",
            pretrained=False,
            img_size=32,
            patch_size=8,
            depth=2,
            embed_dim=embed_dim,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            num_classes=10,
        ).eval()
        heads = {m.qkv: m.num_heads for m in model.modules() if isinstance(m, Attention)}

        def after(model, pruner):
            for m in model.modules():
                if isinstance(m, Attention):
                    m.num_heads = pruner.num_heads[m.qkv]
                    m.head_dim = m.qkv.out_features // (3 * m.num_heads)
                    m.attn_dim = m.num_heads * m.head_dim
                    m.scale = m.head_dim**-0.5

        return {
            "model": model,
            "inputs": torch.randn(1, 3, 32, 32),
            "ignored": [model.head],
            "num_heads": heads,
            "after": after,
        }

    return build


def _bert(torch):
    from transformers import BertConfig
    from transformers import BertModel
    from transformers.models.bert.modeling_bert import BertSelfAttention

    config = BertConfig(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
        attn_implementation="eager",
    )
    model = BertModel(config).eval()
    heads = {}
    for m in model.modules():
        if isinstance(m, BertSelfAttention):
            for projection in (m.query, m.key, m.value):
                heads[projection] = m.num_attention_heads

    def after(model, pruner):
        for m in model.modules():
            if isinstance(m, BertSelfAttention):
                m.num_attention_heads = pruner.num_heads[m.query]
                m.attention_head_size = m.query.out_features // m.num_attention_heads
                m.all_head_size = m.query.out_features
                m.scaling = m.attention_head_size**-0.5

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1000, (1, 16), generator=generator)
    inputs = {
        "input_ids": ids,
        "token_type_ids": torch.zeros_like(ids),
        "attention_mask": torch.ones_like(ids),
    }
    return {
        "model": model,
        "inputs": inputs,
        # No classifier in a backbone: the pooler, as in Torch-Pruning's example.
        "ignored": [model.pooler],
        "num_heads": heads,
        "after": after,
        "output_transform": lambda out: out.pooler_output.sum(),
    }


BUILDERS = {
    "resnet50": _torchvision("resnet50", lambda m: m.fc),
    "mobilenet_v2": _torchvision("mobilenet_v2", lambda m: m.classifier[-1]),
    "mobilenet_v3_small": _torchvision("mobilenet_v3_small", lambda m: m.classifier[-1]),
    "efficientnet_b0": _torchvision("efficientnet_b0", lambda m: m.classifier[-1]),
    "densenet121": _torchvision("densenet121", lambda m: m.classifier),
    "convnext_tiny": _torchvision("convnext_tiny", lambda m: m.classifier[-1]),
    "vit": _timm_vit(64, 4, 2.0),
    "vit_tiny": _timm_vit(192, 3, 4.0),
    "bert": _bert,
}


def _run(model, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    return model(inputs)


def _widths(torch, model, ignored):
    """Output widths of the prunable Conv2d / Linear layers, by module."""
    nn = torch.nn
    inside = {id(sub) for layer in ignored for sub in layer.modules()}
    return {
        m: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in inside
    }


def measure(name, head_mode):
    torch, tp = _require()
    torch.manual_seed(0)
    spec = BUILDERS[name](torch)
    model, inputs, ignored = spec["model"], spec["inputs"], spec["ignored"]
    with torch.no_grad():
        reference = _run(model, inputs)
    macs_before, params_before = tp.utils.count_ops_and_params(model, inputs)
    widths_before = _widths(torch, model, ignored)
    spec["heads_before"] = dict(spec["num_heads"])
    attention = {}
    if spec["num_heads"]:
        attention = dict(
            num_heads=spec["num_heads"],
            prune_num_heads=head_mode == "heads",
            prune_head_dims=head_mode == "dims",
            head_pruning_ratio=0.5 if head_mode == "heads" else 0.0,
        )
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(
        model,
        inputs,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5,
        global_pruning=False,
        iterative_steps=1,
        ignored_layers=ignored,
        output_transform=spec.get("output_transform"),
        **attention,
    )
    groups = len(
        list(
            pruner.DG.get_all_groups(
                ignored_layers=pruner.ignored_layers,
                root_module_types=pruner.root_module_types,
            )
        )
    )
    pruner.step()
    if spec["after"] is not None:
        spec["after"](model, pruner)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        out = _run(model, inputs)
    before, after = _shape(reference), _shape(out)
    runs = "yes" if before == after else f"yes, output {after} (was {before})"
    heads = ""
    if spec["num_heads"]:
        counts = sorted({(spec["heads_before"][m], n) for m, n in pruner.num_heads.items()})
        heads = ", ".join(f"{a}->{b}" for a, b in counts)
    macs_after, params_after = tp.utils.count_ops_and_params(model, inputs)
    widths_after = _widths(torch, model, ignored)
    narrowed = sum(widths_after[m] < w for m, w in widths_before.items())
    return {
        "params_before": params_before,
        "params_after": params_after,
        "macs_before": macs_before,
        "macs_after": macs_after,
        "groups": groups,
        "narrowed": narrowed,
        "layers": len(widths_before),
        "seconds": seconds,
        "runs": runs,
        "heads": heads,
    }


def _shape(out):
    if hasattr(out, "shape"):
        return tuple(out.shape)
    if hasattr(out, "last_hidden_state"):
        hidden = tuple(out.last_hidden_state.shape)
        return f"hidden {hidden}, pooled {tuple(out.pooler_output.shape)}"
    return type(out).__name__


def _versions():
    from importlib import metadata

    lines = []
    for module, distribution in (
        ("torch", "torch"),
        ("torchvision", "torchvision"),
        ("timm", "timm"),
        ("transformers", "transformers"),
        ("torch_pruning", "torch-pruning"),
    ):
        try:
            version = metadata.version(distribution)
            reported = importlib.import_module(module).__version__
        except (ImportError, metadata.PackageNotFoundError):
            lines.append(f"{module} not installed")
            continue
        if reported != version:  # torch_pruning 1.6.1 says 1.6.0
            version = f"{version} (its __version__ says {reported})"
        lines.append(f"{module} {version}")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument(
        "--head-mode",
        choices=("heads", "dims"),
        default="heads",
        help="attention: remove half of the heads (default) or half of each head's width",
    )
    args = parser.parse_args()
    _require()
    import warnings

    warnings.filterwarnings("ignore")
    rows, failures = [], []
    for name in args.models:
        print(f"[{name}] ...", file=sys.stderr, flush=True)
        try:
            rows.append((name, measure(name, args.head_mode)))
        except Exception as error:  # a reference table: record and go on
            traceback.print_exc()
            failures.append((name, f"{type(error).__name__}: {error}".splitlines()[0][:300]))

    print()
    print(
        "| model | parameters | after one step | fewer | MACs | MACs after | fewer "
        "| groups | Conv/Linear narrowed | heads per layer | pruning (s) | pruned model runs |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows:
        print(
            f"| {LABELS[name]} | {r['params_before']:,} | {r['params_after']:,} "
            f"| {r['params_before'] / r['params_after']:.2f}x "
            f"| {r['macs_before'] / 1e6:,.2f}M | {r['macs_after'] / 1e6:,.2f}M "
            f"| {r['macs_before'] / r['macs_after']:.2f}x | {r['groups']} "
            f"| {r['narrowed']}/{r['layers']} | {r['heads'] or '-'} "
            f"| {r['seconds']:.1f} | {r['runs']} |"
        )
    for name, reason in failures:
        print(f"| {LABELS[name]} | failed: {reason} | | | | | | | | | | |")
    print()
    print(f"attention: --head-mode {args.head_mode}")
    print("versions: " + ", ".join(_versions()))


if __name__ == "__main__":
    main()
