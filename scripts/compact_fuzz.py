"""Property test of `kerasreg.compact` on many generated models.

The suite runs a few examples per backend (tests/test_compaction.py); this
runs the same property (tests/compaction_fuzz.py) with a larger budget and
says what the examples covered. Run from the repository root, on each
backend:

    KERAS_BACKEND=tensorflow python scripts/compact_fuzz.py --examples 500 --seed 0

A failure prints the smallest model Hypothesis found that fails, as data,
and the exit status is 1.
"""

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="models to try")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis' random seed")
    parser.add_argument("--max-steps", type=int, default=10, help="steps per model, at most")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import hypothesis
    import keras
    from hypothesis import HealthCheck
    from hypothesis import given
    from hypothesis import settings

    from tests import compaction_fuzz

    warnings.simplefilter("ignore")  # compact's warnings, and Keras' own
    counts = collections.Counter()

    @hypothesis.seed(args.seed)
    @settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(spec=compaction_fuzz.architectures(max_steps=args.max_steps))
    def property_holds(spec):
        summary = compaction_fuzz.check(spec)
        counts["models"] += 1
        counts["smaller"] += summary.kept_params < summary.params
        counts["units removed"] += sum(
            len(units) for units in compaction_fuzz.removed_units(summary).values()
        )
        counts["layers left as is"] += len(summary.left_as_is)
        counts["filter route"] += spec["filter_route"]
        for step in spec["steps"]:
            counts[f"step {step['kind']}"] += 1
            for layer in [step] + step.get("layers", []):
                counts["grouped convolutions"] += layer.get("groups", 1) > 1
                counts["normalization as built"] += layer.get("as_built", False)

    start = time.perf_counter()
    try:
        property_holds()
    finally:
        print(f"backend {keras.backend.backend()}, seed {args.seed}, ", end="")
        print(f"{time.perf_counter() - start:.0f} s")
        for key, value in sorted(counts.items()):
            print(f"{key:<24} {value:>6}")
    print(f"property held on {counts['models']} models")


if __name__ == "__main__":
    main()
