"""Execute every notebook under notebooks/ and write it back in place, with its outputs.

    python notebooks/run_all.py                 # full mode: the runs the notebooks document
    python notebooks/run_all.py --smoke         # the same, in each notebook's small setting
    python notebooks/run_all.py 03              # only the notebooks whose name contains "03"

Each notebook gets a first cell naming the machine, the date, the ltm version, the mode and the
wall time of the execution, and in its metadata a hash of its code cells: `tests/test_notebooks.py`
fails when a code cell is edited without running this again. Progress bars are switched off
(`TQDM_DISABLE=1`) so no bar is saved; figures stay the notebooks' own PNGs.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent
HEADER_TAG = "run-header"  # the first cell, written by this script
METADATA_KEY = "ltm_run"  # notebook metadata: {"code_sha256", "mode", "wall_s", "ltm_version", ...}
KERNEL = "python3"


def code_hash(nb) -> str:
    """sha256 of the notebook's code cells, in order: what the committed outputs were made from."""
    digest = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            digest.update(cell.source.strip().encode() + b"\0")
    return digest.hexdigest()


def machine() -> str:
    """The CPU model, core count and torch build, as the comparisons name them."""
    import torch

    from ltm.core.hardware import cpu_model

    return (f"{cpu_model()}, {os.cpu_count()} cores ({platform.system()} {platform.machine()}), "
            f"torch {torch.__version__}")


def header_text(record: dict) -> str:
    return (f"*Executed by `python notebooks/run_all.py{' --smoke' if record['mode'] == 'smoke' else ''}` "
            f"({record['mode']} mode) on {record['date']}: ltm {record['ltm_version']}, "
            f"{record['machine']}; wall time {record['wall_s']:.0f} s. Re-run that command after "
            f"editing a code cell; the tests check that the outputs belong to the code.*")


def _drop_progress(outputs: list) -> list:
    """Outputs without progress bars (a widget, or a carriage-return bar on stderr)."""
    kept = []
    for out in outputs:
        if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
            continue
        if out.get("output_type") == "stream" and out.get("name") == "stderr" and "\r" in out.get("text", ""):
            continue
        kept.append(out)
    return kept


def strip_header(nb) -> None:
    """Remove the header cell a previous run wrote."""
    nb.cells = [c for c in nb.cells if HEADER_TAG not in c.get("metadata", {}).get("tags", [])]


def run_notebook(nb, smoke: bool, cache: Path, cwd: Path) -> float:
    """Execute a notebook (as read by nbformat) top to bottom in place; return the wall seconds.

    Raises nbclient's CellExecutionError, naming the cell, on the first failure.
    """
    import nbclient

    env = {**os.environ, "LTM_SMOKE": "1" if smoke else "0", "HF_HUB_OFFLINE": "1",
           "LTM_CACHE": str(cache), "TQDM_DISABLE": "1"}
    env.pop("LTM_CHECKPOINT", None)  # 03 would sample a user's run instead of training its own
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=300 if smoke else 1800,
                                     resources={"metadata": {"path": str(cwd)}})
    start = time.perf_counter()
    client.execute(env=env)
    wall = time.perf_counter() - start
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = _drop_progress(cell.outputs)
    return wall


def execute(path: Path, smoke: bool, cache: Path) -> float:
    """Run one notebook and write it back with its outputs, header cell and code hash."""
    import nbformat

    import ltm

    nb = nbformat.read(path, as_version=4)
    strip_header(nb)
    wall = run_notebook(nb, smoke, cache, path.parent)
    record = {"mode": "smoke" if smoke else "full", "wall_s": round(wall, 1), "ltm_version": ltm.__version__,
              "date": datetime.date.today().isoformat(), "machine": machine(), "code_sha256": code_hash(nb)}
    header = nbformat.v4.new_markdown_cell(header_text(record), metadata={"tags": [HEADER_TAG]})
    header.id = HEADER_TAG  # a stable id, so a re-run does not churn it
    nb.cells.insert(0, header)
    nb.metadata[METADATA_KEY] = record
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)  # atomic: a failed run leaves the committed notebook as it was
    return wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="run only notebooks whose file name contains one of these")
    ap.add_argument("--smoke", action="store_true", help="each notebook's small setting (seconds each)")
    args = ap.parse_args(argv)
    paths = sorted(p for p in NOTEBOOK_DIR.glob("*.ipynb")
                   if not args.names or any(n in p.name for n in args.names))
    if not paths:
        print(f"error: no notebook under {NOTEBOOK_DIR} matches {args.names}.", file=sys.stderr)
        return 2
    total = 0.0
    with tempfile.TemporaryDirectory(prefix="ltm-notebooks-") as cache:  # one token cache for all
        for path in paths:
            wall = execute(path, args.smoke, Path(cache))
            total += wall
            print(f"{path.name}: {'smoke' if args.smoke else 'full'} run {wall:.1f} s", flush=True)
    print(f"all {len(paths)} notebooks: {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
