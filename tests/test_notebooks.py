"""Every notebook under notebooks/ runs top to bottom in smoke mode (LTM_SMOKE=1) without error,
and is committed executed: outputs made from its present code by `python notebooks/run_all.py`.

Smoke mode is the notebook's own small setting (a few training steps of tiny models); the full mode
(LTM_SMOKE=0, `pytest -m slow`) is the run each notebook documents. Notebooks that prepare the
embedded corpus share one data cache per session (LTM_CACHE), so its tokenizer is trained once.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "python3"

_spec = importlib.util.spec_from_file_location("run_all", NOTEBOOK_DIR / "run_all.py")
run_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_all)

# Cells tagged with one of these must leave this text in their outputs (the notebook's key result).
TAGGED_OUTPUTS = {
    "heldout-table": "-ELBO (bound)",  # 01, 02, 04: held-out numbers labelled as a bound
    "elbo-is-ce": "summed CE",  # 04: the degenerate families' ELBO against their cross-entropy
    "conditional-table": "prompt NLL given z",  # 03: what the thoughts change in the samples
}
# The notebooks the project documents, and the tagged cells each must hold.
EXPECTED = {
    "01_priors_and_guides.ipynb": {"heldout-table"},
    "02_inference_time_compute.ipynb": {"heldout-table"},
    "03_sampling_from_posteriors.ipynb": {"conditional-table"},
    "04_pondering_as_degenerate_priors.ipynb": {"elbo-is-ce", "heldout-table"},
}


def _require_runner():
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install ltm[dev])")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install ltm[dev])")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install ltm[dev])")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.skip(f"no Jupyter kernel named '{KERNEL}'; install one with "
                    f"`python -m ipykernel install --user --name {KERNEL}`")
    return nbformat, nbclient


def _output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append(out["text"])
        parts.append(out.get("data", {}).get("text/plain", ""))
        parts.append(out.get("data", {}).get("text/markdown", ""))
    return "".join(parts)


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found under {NOTEBOOK_DIR}"
    missing = sorted(set(EXPECTED) - {p.name for p in NOTEBOOKS})
    assert not missing, f"notebooks missing under {NOTEBOOK_DIR}: {missing}"


def _tags(nb) -> set[str]:
    return {tag for cell in nb.cells for tag in cell.get("metadata", {}).get("tags", [])}


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One token cache for every notebook of the session (the embedded corpus's BPE, trained once)."""
    return tmp_path_factory.mktemp("ltm-cache")


def _run(path: Path, smoke: bool, cache: Path) -> float:
    """Execute a fresh copy of the notebook in smoke or full mode; check its tagged outputs and that
    the committed notebook has outputs wherever this run made some; return the seconds."""
    nbformat, _ = _require_runner()
    committed = nbformat.read(path, as_version=4)
    run_all.strip_header(committed)
    lost = EXPECTED.get(path.name, set()) - _tags(committed)
    assert not lost, f"{path.name} lost its tagged cells {sorted(lost)} (see TAGGED_OUTPUTS)."
    nb = copy.deepcopy(committed)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    seconds = run_all.run_notebook(nb, smoke, cache, path.parent)
    for cell in nb.cells:
        for tag, expected in TAGGED_OUTPUTS.items():
            if tag in cell.get("metadata", {}).get("tags", []):
                assert expected in _output_text(cell), (
                    f"{path.name}: the cell tagged '{tag}' did not print '{expected}'.")
    bare = [i for i, (ran, kept) in enumerate(zip(nb.cells, committed.cells, strict=True))
            if ran.cell_type == "code" and ran.outputs and not kept.outputs]
    assert not bare, (f"{path.name}: code cells {bare} print something but are committed without "
                      f"outputs; run `python notebooks/run_all.py {path.name[:2]}` and commit it.")
    return seconds


def _committed(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_executed_with_a_header(path: Path):
    """The first cell names the machine, date, ltm version and wall time of the committed run."""
    nb = _committed(path)
    first, record = nb["cells"][0], nb["metadata"].get(run_all.METADATA_KEY)
    assert record and run_all.HEADER_TAG in first.get("metadata", {}).get("tags", []), (
        f"{path.name} has no header cell; run `python notebooks/run_all.py {path.name[:2]}`.")
    header = "".join(first["source"])
    assert f"ltm {record['ltm_version']}" in header and record["ltm_version"] != "unknown"
    assert record["machine"] in header and f"{record['wall_s']:.0f} s" in header
    assert record["mode"] == "full", f"{path.name} was committed from a --smoke run."
    assert not any(out.get("name") == "stderr" and "Warning" in "".join(out.get("text", ""))
                   for cell in nb["cells"] if cell["cell_type"] == "code" for out in cell["outputs"]), (
        f"{path.name} saved a warning in its outputs.")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_outputs_belong_to_its_code(path: Path):
    """Editing a code cell without re-running run_all.py makes the committed outputs stale."""
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install ltm[dev])")
    nb = nbformat.read(path, as_version=4)
    recorded = nb.metadata.get(run_all.METADATA_KEY, {}).get("code_sha256")
    assert recorded == run_all.code_hash(nb), (
        f"{path.name}: its code changed after its outputs were made; run "
        f"`python notebooks/run_all.py {path.name[:2]}` and commit the result.")


def test_the_freshness_check_sees_an_edited_cell():
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install ltm[dev])")
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    before = run_all.code_hash(nb)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.source += "\nprint('edited')"
    assert run_all.code_hash(nb) != before
    nb.cells.append(nbformat.v4.new_markdown_cell("prose does not count"))
    code.source = code.source[: -len("\nprint('edited')")]
    assert run_all.code_hash(nb) == before


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(path: Path, data_cache: Path):
    print(f"{path.name}: smoke run {_run(path, smoke=True, cache=data_cache):.1f} s")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_full_mode(path: Path, data_cache: Path):
    """The run the notebook documents, top to bottom (minutes; `pytest -m slow`)."""
    print(f"{path.name}: full run {_run(path, smoke=False, cache=data_cache):.1f} s")
