"""Tokenizing a large corpus into shards (`python -m ltm.prepare`): wall time, characters/s and the
peak memory of the whole process tree at --num-proc 1 and 2, and an interrupted run resumed.

The corpus is generated on disk, deterministic for `--seed`: `--size` bytes of English-like text
in files of at most `--file-size` bytes, paragraphs (one document each, separated by a blank line)
of 2-8 sentences drawn with replacement from the sentences of ../shared/data's Wikipedia excerpt
(a word list where that is absent). A corpus already generated with the same size and seed is
reused. Each run is `python -m ltm.prepare` in a fresh session with the GPT-2 tokenizer
(../shared/data/tokenizers/gpt2; a BPE trained on the data where absent), shards of about a tenth
of the corpus' tokens (`--shard-tokens`), 5 % held out.

Memory: /proc is read every 0.1 s for every process of the run's session (the main process, its
workers and multiprocessing's resource tracker). Two figures: the largest sum of the resident sets
seen at one poll ("sampled"), and the sum over processes of each one's own peak (VmHWM), an upper
bound of the tree's peak that a poll cannot miss (the headline). Throughput: the documents'
characters over the wall time of the whole command (start-up, the counting pass and the writing
included).

Interrupted run: the largest --num-proc again, killed with SIGKILL (main process and workers at
once) when half its shards are on disk, then the same command run again; its output must equal the
straight run's, file by file (SHA-256). Outputs are deleted once hashed (`--keep` keeps them).

Run:  python bench/prepare.py --size 2G           (the issue's figure; about 40 min on 2 cores)
      python bench/prepare.py --size 100M         (about 2-3 minutes)
      python bench/prepare.py --quick              (smoke run: 3 MB)
The last line is the peak memory and the 2-process/1-process throughput ratio.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _args import bench_parser

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
GPT2 = SHARED / "tokenizers" / "gpt2" / "tokenizer.json"
WIKI = SHARED / "enwiki_excerpt" / "articles.jsonl.gz"
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her she there been one all we their has would when if so no time "
         "river city people war history law state music language country first world water system").split()
POLL_S = 0.1


def parse_size(text: str) -> int:
    """Bytes of "2G", "100M", "512k" or "12345"."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)[bB]?\s*", text)
    if not m:
        raise ValueError(f"cannot read size {text!r}; write e.g. 2G, 100M or 5000000")
    return int(float(m.group(1)) * 1000 ** " kmg".index(m.group(2).lower() or " "))


# -- the corpus ---------------------------------------------------------------------------------


def sentence_pool() -> list[str]:
    """Sentences of the Wikipedia excerpt, or made-up ones from a word list where it is absent."""
    if WIKI.is_file():
        with gzip.open(WIKI, "rt") as f:
            text = " ".join(json.loads(line)["text"].replace("\n", " ") for line in f)
        return [s for s in re.split(r"(?<=[.!?])\s+", text) if 20 <= len(s) <= 300]
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24))).capitalize() + "."
            for _ in range(20_000)]


def make_corpus(folder: Path, size: int, file_size: int, seed: int) -> dict:
    """`size` bytes of paragraphs in files of at most `file_size` bytes; reused when present."""
    marker = folder.with_name(folder.name + ".json")  # beside it: a file in it would be read as data
    if marker.is_file():
        return json.loads(marker.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pool, rng, started = sentence_pool(), random.Random(seed), time.perf_counter()
    written, files = 0, 0
    while written < size:
        path, in_file, buf = folder / f"part-{files:04d}.txt", 0, []
        with open(path, "w", encoding="utf-8") as f:
            while in_file < min(file_size, size - written):
                para = " ".join(rng.choices(pool, k=rng.randint(2, 8))) + "\n\n"
                buf.append(para)
                in_file += len(para.encode())
                if len(buf) >= 4096:
                    f.write("".join(buf))
                    buf = []
            f.write("".join(buf))
        written, files = written + in_file, files + 1
    info = {"size": size, "seed": seed, "files": files, "bytes": written,
            "seconds": round(time.perf_counter() - started, 1), "sentences": len(pool),
            "source": str(WIKI) if WIKI.is_file() else "word list"}
    marker.write_text(json.dumps(info))
    return info


# -- one run, its process tree watched ----------------------------------------------------------


def _session_of(stat: str) -> int:
    return int(stat.rsplit(")", 1)[1].split()[3])  # fields after the name: state ppid pgrp session


def _status_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, (0, 0) if it is gone or a kernel thread."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def session_pids(sid: int) -> list[int]:
    """Every live process of session `sid`."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if _session_of(f.read()) == sid:
                        pids.append(int(name))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def run_prepare(args: list[str], stop_when=None) -> dict:
    """Run `python -m ltm.prepare args` in a new session and watch it; `stop_when()` true: SIGKILL all."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    # Output goes to files, not pipes: a pipe nobody drains while we poll fills up (64 KiB of
    # progress bar) and blocks the child for good.
    out_file, err_file = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-m", "ltm.prepare", *args], cwd=REPO, env=env,
                            stdout=out_file, stderr=err_file, text=True, start_new_session=True)
    hwm: dict[int, int] = {}
    sampled, processes, killed = 0, 0, False
    while proc.poll() is None:
        pids = session_pids(proc.pid)
        processes = max(processes, len(pids))
        now = 0
        for pid in pids:
            rss, peak = _status_kib(pid)
            now += rss
            hwm[pid] = max(hwm.get(pid, 0), peak)
        sampled = max(sampled, now)
        if stop_when is not None and not killed and stop_when():
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
        time.sleep(POLL_S)
    proc.wait()
    wall = time.perf_counter() - started
    out_file.seek(0), err_file.seek(0)
    out, err = out_file.read(), err_file.read()
    out_file.close(), err_file.close()
    while session_pids(proc.pid):  # workers of a killed run: gone with their group
        time.sleep(POLL_S)
    if not killed and proc.returncode != 0:
        raise SystemExit(f"python -m ltm.prepare {' '.join(args)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall": wall, "peak_hwm_gb": sum(hwm.values()) * 1024 / 1e9,
            "peak_sampled_gb": sampled * 1024 / 1e9, "processes": processes, "killed": killed,
            "stdout": out, "stderr": err}


def shards_done(folder: Path) -> int:
    try:
        return len(json.loads((folder / "index.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of a prepared folder."""
    out = {}
    for p in sorted(folder.iterdir()):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
        out[p.name] = h.hexdigest()
    return out


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--size", default="100M", help="corpus size in bytes: 2G, 100M, ... (default: 100M)")
    ap.add_argument("--file-size", default="128M", help="at most this many bytes per file (default: 128M)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the corpus (default: 0)")
    ap.add_argument("--num-procs", default="1,2", help="--num-proc values to run (default: 1,2)")
    ap.add_argument("--shard-tokens", type=int, default=None,
                    help="tokens per shard (default: about a tenth of the corpus' tokens)")
    ap.add_argument("--tokenizer", default=str(GPT2) if GPT2.is_file() else "bpe",
                    help="tokenizer.json, or bpe (default: GPT-2's from ../shared/data, else bpe)")
    ap.add_argument("--work-dir", default=str(REPO / "runs" / "bench_prepare"),
                    help="where the corpus and the outputs go (default: runs/bench_prepare)")
    ap.add_argument("--keep", action="store_true", help="keep the prepared outputs")
    ap.add_argument("--no-interrupt", action="store_true",
                    help="skip the interrupted-and-resumed run (throughput and memory only)")
    args = ap.parse_args()
    size = parse_size("3M" if args.quick else args.size)
    num_procs = [int(n) for n in args.num_procs.split(",")]
    work = Path(args.work_dir)
    folder = work / f"corpus-{size}-seed{args.seed}"
    info = make_corpus(folder, size, parse_size(args.file_size), args.seed)
    print(f"corpus: {info['bytes'] / 1e6:.1f} MB in {info['files']} files, paragraphs of sentences from "
          f"{info['source']} ({info['sentences']} sentences), seed {args.seed}, generated in "
          f"{info['seconds']:.1f} s: {folder}")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cores:
        print(f"warning: load average {load:.1f} on {cores} cores: other work skews these timings")
    shard_tokens = args.shard_tokens or max(1000, size // 45)  # ~4.5 bytes a GPT-2 token: ~10 shards
    chunk_chars = min(1_000_000, max(10_000, size // 100))  # the default, smaller for a small corpus
    common = ["--dataset", str(folder), "--tokenizer", args.tokenizer, "--shard-tokens", str(shard_tokens),
              "--chunk-chars", str(chunk_chars), "--val-fraction", "0.05"]
    print(f"tokenizer: {args.tokenizer}; shards of >= {shard_tokens:,} train tokens, chunks of "
          f"{chunk_chars:,} characters; {cores} cores\n")
    print(f"{'num-proc':>8} {'wall s':>8} {'Mchar/s':>8} {'Mtok/s':>7} {'peak GB':>8} {'sampled':>8} "
          f"{'procs':>5} {'shards':>6}")
    results, digests = {}, {}
    for n in num_procs:
        out = work / f"out-np{n}"
        shutil.rmtree(out, ignore_errors=True)
        r = run_prepare([*common, "--out-dir", str(out), "--num-proc", str(n)])
        index = json.loads((out / "index.json").read_text())
        r["chars"], r["tokens"] = index["plan"]["characters"], sum(index["tokens"].values())
        r["shards"] = len(index["shards"])
        results[n], digests[n] = r, digest(out)
        chars_s, tokens_s = r["chars"] / r["wall"], r["tokens"] / r["wall"]
        print(f"{n:>8} {r['wall']:>8.1f} {chars_s / 1e6:>8.2f} {tokens_s / 1e6:>7.2f} "
              f"{r['peak_hwm_gb']:>8.3f} {r['peak_sampled_gb']:>8.3f} {r['processes']:>5} {r['shards']:>6}")
        if not args.keep and n != num_procs[-1]:
            shutil.rmtree(out)
    same = all(d == digests[num_procs[0]] for d in digests.values())
    print(f"\noutputs of --num-proc {', '.join(map(str, num_procs))}: {'identical' if same else 'DIFFERENT'} "
          f"({len(digests[num_procs[0]])} files, SHA-256)")

    n = num_procs[-1]
    straight, stopped = work / f"out-np{n}", work / "out-interrupted"
    if not args.no_interrupt:
        interrupted_run(common, results, digests, n, straight, stopped, args.keep)
    elif not args.keep:
        shutil.rmtree(straight)
    peak = max(r["peak_hwm_gb"] for r in results.values())
    one, last = results[num_procs[0]], results[n]
    ratio = (last["chars"] / last["wall"]) / (one["chars"] / one["wall"])
    ok = "PASS" if peak <= 1.5 else "FAIL"
    print(f"peak RSS of the process tree {peak:.3f} GB at {info['bytes'] / 1e9:.3f} GB of text (target "
          f"<= 1.5 at 2 GB: {ok}), --num-proc {n}/{num_procs[0]} throughput ratio {ratio:.2f}")


def interrupted_run(common: list[str], results: dict, digests: dict, n: int, straight: Path, stopped: Path,
                    keep: bool) -> None:
    """Kill a --num-proc n run when half its shards are written, run it again, compare with the
    straight run's output."""
    shutil.rmtree(stopped, ignore_errors=True)
    target = max(1, results[n]["shards"] // 2)
    cmd = [*common, "--out-dir", str(stopped), "--num-proc", str(n)]
    first = run_prepare(cmd, stop_when=lambda: shards_done(stopped) >= target)
    at_kill = shards_done(stopped)
    second = run_prepare(cmd)
    resumed_same = digest(stopped) == digests[n]
    late = "" if first["killed"] else " (it finished before the kill)"
    print(f"interrupted: --num-proc {n} killed (SIGKILL, whole process group) after {first['wall']:.1f} s "
          f"with {at_kill} of {results[n]['shards']} shards on disk{late}")
    print(f"resumed: the same command finished in {second['wall']:.1f} s (straight: "
          f"{results[n]['wall']:.1f} s); output {'identical to' if resumed_same else 'DIFFERENT from'} the "
          f"straight run's")
    if not keep:
        shutil.rmtree(stopped)
        shutil.rmtree(straight)


if __name__ == "__main__":
    main()
