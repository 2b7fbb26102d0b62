"""Execute the tutorial notebooks and store their outputs in place.

The notebooks in `tutorials/` are committed with their outputs (plots
included), so they read on GitHub without running. This script produces those
outputs: it runs every notebook top to bottom in a fresh kernel (nbclient),
with the working directory set to `tutorials/`, writes the executed notebook
back and prints each notebook's run time. A cell that raises stops the script
with the error, and the notebook is left as it was.

    python scripts/run_tutorials.py                      # all notebooks
    python scripts/run_tutorials.py tutorials/02_*.ipynb  # some
    KERAS_BACKEND=jax python scripts/run_tutorials.py    # another backend

The committed outputs come from the TensorFlow backend (the default here).
Needs the `tutorials` extra: `pip install -e ".[tensorflow,tutorials]"`.
"""

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def notebooks(paths=None):
    """The tutorial notebooks, in order."""
    if paths:
        return [Path(p).resolve() for p in paths]
    return sorted(TUTORIALS.glob("*.ipynb"))


def execute(path, timeout=900):
    """Runs the notebook at `path` in a fresh kernel; returns it and the seconds taken."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    return notebook, time.perf_counter() - start


# TensorFlow's C++ start-up lines ("Could not find cuda drivers ..."), which
# it writes before reading TF_CPP_MIN_LOG_LEVEL: noise in a rendered notebook.
_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} )")


def strip_native_logs(notebook):
    """Drops stderr lines from TensorFlow's C++ logging; keeps everything else."""
    for cell in notebook.cells:
        kept = []
        for output in cell.get("outputs", []):
            if output.get("name") == "stderr":
                lines = output["text"].splitlines(keepends=True)
                output["text"] = "".join(line for line in lines if not _NATIVE_LOG.match(line))
                if not output["text"].strip():
                    continue
            kept.append(output)
        if cell.cell_type == "code":
            cell.outputs = kept


def errors(notebook):
    """Error outputs and tracebacks printed to stderr, as strings."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append(f"{output.get('ename')}: {output.get('evalue')}")
            elif output.get("name") == "stderr" and "Traceback" in output.get("text", ""):
                found.append(output["text"])
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="notebooks to run (default: all)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # no C++ log lines in the outputs
    print(f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}")
    total = 0.0
    for path in notebooks(args.paths):
        notebook, seconds = execute(path, args.timeout)
        problems = errors(notebook)
        if problems:
            print(f"{path.name}: errors in the outputs:\n" + "\n".join(problems))
            return 1
        strip_native_logs(notebook)
        notebook.metadata.pop("jupytext", None)
        notebook.metadata["kernelspec"] = KERNELSPEC
        nbformat.write(notebook, path)
        total += seconds
        print(f"{path.relative_to(ROOT)}: {seconds:.1f} s", flush=True)
    print(f"total: {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
