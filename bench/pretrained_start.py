"""Starting from a pretrained checkpoint: what each family adds at step 0, and what a step costs.

Part 1 (--hf DIR, or --checkpoint RUN, exported first): every family is started from the same
pretrained decoder and scored on held-out blocks before any training; the table gives each one's
NLL at step 0 and its distance from the pretrained model's (vanilla's) own. The LTM's cross-attention
enters at zero, so its distance is 0 for any z; a token-level family changes the computation at
step 0 (thought slots, pause tokens, a second pass), and the distance says by how much.

Part 2 (--cost): a random model of a pretrained checkpoint's shape (default SmolLM2-135M: 30 layers,
width 576, 9 heads with 3 key/value heads, SwiGLU 1536, tied head) continues pretraining for a few
steps at B 8, T 256 through `python -m ltm.train --init-from-hf`, one process per family; the table
gives seconds per step and the peak resident memory of each process, against the same vanilla step
measured in the same run.

    python bench/pretrained_start.py --checkpoint runs/compare/controls_ponder/ponderlm2.baseline/seed_0 \\
        --dataset ../shared/data/enwiki_excerpt/articles.jsonl.gz
    python bench/pretrained_start.py --cost --steps 3
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import safetensors.torch
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import bench_parser  # noqa: E402

from ltm.data import DataConfig, embedded_documents, prepare_data  # noqa: E402
from ltm.data.tokenizer import train_bpe  # noqa: E402
from ltm.eval.exact import exact_scores  # noqa: E402
from ltm.families import FAMILIES  # noqa: E402
from ltm.models import Decoder, DecoderConfig, from_hf  # noqa: E402
from ltm.models.hf_format import hf_config_from_decoder, hf_state_from_decoder  # noqa: E402
from ltm.training.hf_export import export_hf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
STEP0 = [  # (family, its options, what it adds at step 0)
    ("vanilla", None, "nothing: the pretrained model itself"),
    ("ltm", None, "cross-attention to z in every layer, its output projection at zero"),
    ("ponderlm2", None, "a thought slot after each token (its own last hidden state, fed back); "
                        "token inputs x sqrt(2.5 D), the published scale"),
    ("ponderlm2", {"embed_scale": "none"}, "the same, token inputs as pretrained "
                                           "(--ponderlm2.embed-scale none)"),
    ("ponderlm", None, "pondering passes: the embedding mixture of each prediction added to the input"),
    ("pause", None, "a learned pause token after each token"),
    ("looped", None, "the block stack run a second time"),
    ("adaptive_cot", None, "latent steps per token, halted by a new router"),
]
COST_FLAGS = {  # what each family needs to fit 24 GB at B 8, T 256 of a 135M model
    "ltm": ["--ltm.d-latent", "64"],  # and --ltm.n-latent n_layer: one latent vector per layer
    "ponderlm2": ["--ponderlm2.embed-scale", "none", "--grad-accum", "4"],
}
SMOLLM2_135M = dict(n_layer=30, n_head=9, n_kv_head=3, d_model=576, d_ff=1536, rope_base=100000.0,
                    norm_eps=1e-5, tie_embeddings=True)  # its vocabulary: 49,152
TINY = dict(n_layer=2, n_head=4, n_kv_head=2, d_model=64, d_ff=128, tie_embeddings=True)


def step0_table(folder: Path, dataset: str, block_size: int, batches: int, batch_size: int) -> list[dict]:
    """Held-out NLL of every family started from `folder`, before any training."""
    data = prepare_data(DataConfig(dataset=dataset, tokenizer=str(folder / "tokenizer.json"),
                                   block_size=block_size), str(REPO / "runs" / "cache"))
    blocks = data.val.fixed_batches(batch_size, batches)
    rows = []
    for name, options, adds in STEP0:
        torch.manual_seed(0)
        if name == "ltm":  # one latent vector per layer
            options = {"n_latent": json.loads((folder / "config.json").read_text())["num_hidden_layers"],
                       "d_latent": 32}
        model, _ = from_hf(folder, FAMILIES[name], options, block_size=block_size)
        with torch.no_grad():
            if model.exact_nll:
                nll = exact_scores(model, blocks, prefix_len=block_size // 2)["nll"]
            else:  # z from the prior: the reconstruction term, which is the NLL at step 0
                total, count = 0.0, 0
                for batch in blocks:
                    z = _prior_draw(model, batch.shape[0])  # (B, N, D)
                    logits = model.full_logits(batch[:, :-1], latents=z)  # (B, T, V)
                    total += torch.nn.functional.cross_entropy(
                        logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
                    count += batch[:, 1:].numel()
                nll = total / count
        rows.append({"family": name, "adds": adds, "nll": nll})
    base = rows[0]["nll"]
    for row in rows:
        row["gap"] = row["nll"] - base
    return rows


def _prior_draw(model, n: int) -> torch.Tensor:
    """z (n, N, D) drawn from the LTM's prior."""
    import pyro

    with pyro.plate("sequences", n):
        return pyro.sample("z", model.prior())


def random_checkpoint(folder: Path, shape: dict, tokenizer: Path, vocab_size: int) -> Path:
    """A random decoder of `shape` saved as a Hugging Face folder (no transformers needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = DecoderConfig(block_size=8192, vocab_size=vocab_size, **shape)
    torch.manual_seed(0)
    decoder = Decoder(cfg)
    tensors = {k: v.contiguous().clone() for k, v in hf_state_from_decoder(decoder.state_dict(), cfg).items()}
    safetensors.torch.save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    hf = hf_config_from_decoder(cfg, bos_id=None, eos_id=None)
    (folder / "config.json").write_text(json.dumps(hf, indent=2))
    (folder / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    return folder


def cost_row(family: str, folder: Path, dataset: str, steps: int, batch: int, seq_len: int,
             threads: int, out: Path, extra: list[str]) -> dict:
    """Seconds per step (median after the first) and peak memory of one training process."""
    flags = ["--init-from-hf", str(folder), "--model", family, "--dataset", dataset,
             "--block-size", str(seq_len), "--batch-size", str(batch), "--max-steps", str(steps),
             "--eval-every", "0", "--save-every", "0", "--eval-batches", "1", "--threads", str(threads),
             "--out-dir", str(out / family), "--no-progress", "--max-documents", "400", *extra]
    code = ("import resource, sys, ltm.train\nstatus = ltm.train.main(sys.argv[1:])\n"
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(status)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *flags], capture_output=True, text=True, cwd=REPO,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                               "LTM_CACHE": str(REPO / "runs" / "cache")})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{family}: training failed:\n{done.stderr[-2000:]}")
    peak = int(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("PEAK_KB")))
    records = [json.loads(line) for line in (out / family / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in records if r["split"] == "train"][1:]  # the first warms up
    per_step = batch * seq_len / statistics.median(rates)
    return {"family": family, "s_per_step": per_step, "peak_gib": peak / 2**20, "wall_s": wall}


def main() -> None:
    ap = bench_parser(__doc__, batch=8, seq_len=256, threads=0)
    ap.add_argument("--hf", default=None, help="part 1: a pretrained Hugging Face folder")
    ap.add_argument("--checkpoint", default=None, help="part 1: an ltm vanilla run, exported first")
    ap.add_argument("--dataset", default=str(DATA / "enwiki_excerpt" / "articles.jsonl.gz"))
    ap.add_argument("--block-size", type=int, default=128, help="part 1: held-out block length")
    ap.add_argument("--batches", type=int, default=4, help="part 1: held-out batches of 16 blocks")
    ap.add_argument("--cost", action="store_true", help="part 2: step time and memory at the shape")
    ap.add_argument("--steps", type=int, default=3, help="part 2: training steps per family")
    ap.add_argument("--families", default="vanilla,ltm,ponderlm2", help="part 2: families to time")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ltm-pretrained-"))
    tokenizer = DATA / "tokenizers" / "gpt2" / "tokenizer.json"
    if args.quick:  # a smoke run of both parts on a tiny random model, with no data from ../shared
        args.dataset, args.block_size, args.cost = "embedded", 32, True
        tokenizer = tmp / "tokenizer.json"
        train_bpe(embedded_documents()[:50], 400).save(str(tokenizer))
        args.hf = str(random_checkpoint(tmp / "tiny", TINY, tokenizer, vocab_size=400))
    elif not Path(args.dataset).exists():
        raise SystemExit(f"dataset {args.dataset} is absent (see ../shared/data); pass --dataset.")
    if args.hf or args.checkpoint:
        folder = Path(args.hf) if args.hf else export_hf(args.checkpoint, tmp / "export")
        rows = step0_table(folder, args.dataset, args.block_size, 1 if args.quick else args.batches, 16)
        print(f"step 0 from {'a tiny random model' if args.quick else args.hf or args.checkpoint}: "
              f"held-out NLL (nats/token) of each family before any training, {args.block_size}-token "
              f"blocks of {args.dataset}")
        print("| family | what it adds at step 0 | NLL at step 0 | minus the pretrained model's |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r['family']} | {r['adds']} | {r['nll']:.4f} | {r['gap']:+.4f} |")
    if args.cost:
        if args.quick:
            shape, (seq, batch, steps) = TINY, (32, 4, 2)  # B 4: ponderlm2 splits it into 4
            folder = Path(args.hf)
        else:
            if not tokenizer.is_file():
                raise SystemExit(f"{tokenizer} is absent (see ../shared/data): the cost part uses GPT-2's "
                                 f"tokenizer.")
            shape, (seq, batch, steps) = SMOLLM2_135M, (args.seq_len, args.batch, args.steps)
            folder = random_checkpoint(tmp / "random", shape, tokenizer, vocab_size=50304)
        params = sum(t.numel() for t in safetensors.torch.load_file(folder / "model.safetensors").values())
        what = "a tiny stand-in for SmolLM2-135M's shape" if args.quick else (
            "SmolLM2-135M's shape with GPT-2's vocabulary (50,304 rows; SmolLM2's tokenizer is not here)")
        print(f"cost at {what}: {params / 1e6:.1f}M parameters, B {batch}, T {seq}, {steps} steps, "
              f"{args.threads or torch.get_num_threads()} threads, precision auto")
        print("| family | flags | s per training step (median) | x vanilla | peak memory (GiB) | process "
              "wall time (s) |")
        print("|---|---|---|---|---|---|")
        rows = {}
        for fam in args.families.split(","):
            extra = list(COST_FLAGS.get(fam, []))
            if fam == "ltm":
                extra += ["--ltm.n-latent", str(shape["n_layer"])]
            rows[fam] = r = cost_row(fam, folder, args.dataset, steps, batch, seq, args.threads, tmp, extra)
            ratio = r["s_per_step"] / rows.get("vanilla", r)["s_per_step"]
            print(f"| {fam} | {' '.join(extra)} | {r['s_per_step']:.2f} | {ratio:.2f} | "
                  f"{r['peak_gib']:.2f} | {r['wall_s']:.0f} |", flush=True)
        others = [f for f in rows if f != "vanilla"]
        if "vanilla" in rows and others:
            print("step-time ratio to vanilla: " + ", ".join(
                f"{f} {rows[f]['s_per_step'] / rows['vanilla']['s_per_step']:.2f}x (peak "
                f"{rows[f]['peak_gib']:.2f} GiB)" for f in others))


if __name__ == "__main__":
    main()
