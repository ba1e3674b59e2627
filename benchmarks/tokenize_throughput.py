"""Tokenisation throughput: the prepare pipeline (1 and 2 workers) vs HF tokenizers' own encode_batch.

    python benchmarks/tokenize_throughput.py [--data ../shared/data/openwebtext] [--scales 1,4] [--workers 1,2]

The same text three ways, each timed on a fresh tokenizer (cold cache): `encode_batch` and
`encode_batch_fast` over the whole text held in a list (the raw speed of the tokenizer, reading
excluded), and the real pipeline, `prepare_corpus` with the tokenizer given (source reading, split,
batching, workers, memmap writing: everything but tokenizer training), each run in a fresh process
so its peak RSS (the process and its workers) is its own. Scale k is the data read k times (a folder
of k links to every data file). Reported: MB/s of UTF-8 text (min-time of --repeats runs), the ratio
of encode_batch's MB/s to the pipeline's (goal <= 1.5), seconds per scale (time linear in corpus size:
ratio close to k), peak RSS per scale (flat memory). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lmcore.data import open_source, prepare_corpus
from lmcore.data.sources import is_data_file
from lmcore.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def replicate(data: Path, k: int, root: Path) -> Path:
    """A folder that holds every data file of `data` k times (as links): the source read k times over."""
    out = root / f"x{k}"
    files = [data] if data.is_file() else sorted(p for p in data.rglob("*") if p.is_file() and is_data_file(p))
    for i in range(k):
        (out / f"copy{i:03d}").mkdir(parents=True, exist_ok=True)
        for f in files:
            link = out / f"copy{i:03d}" / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    return out


def run_pipeline(src: Path, tokenizer: Path, out: Path, workers: int, batch_size: int, vocab: int) -> dict:
    """prepare_corpus in a fresh process: its wall time (inside), text bytes, and peak RSS of it and its workers."""
    code = (
        "import json, os, resource, time\n"
        "from lmcore.data import prepare_corpus\n"
        "t, c = time.perf_counter(), os.times()\n"
        f"meta = prepare_corpus({str(src)!r}, {str(out)!r}, vocab_size={vocab}, max_docs=None, val_fraction=0.05, "
        f"seed=0,"
        f" num_workers={workers}, batch_size={batch_size}, progress=False, tokenizer={str(tokenizer)!r})\n"
        "s, d = time.perf_counter() - t, os.times()\n"
        # CPU seconds of this process and its (joined) workers: less sensitive to other users' load than wall time.
        "cpu = sum(getattr(d, f) - getattr(c, f) for f in ('user', 'system', 'children_user', 'children_system'))\n"
        # VmHWM: this process's own peak (ru_maxrss would carry over the benchmark's peak across exec).
        "hwm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0] / 1024\n"
        "print(json.dumps({'seconds': s, 'text_bytes': sum(v['text_bytes'] for v in meta['splits'].values()),"
        " 'tokens': sum(v['tokens'] for v in meta['splits'].values()), 'rss_mb': hwm, 'cpu_s': cpu,"
        " 'worker_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_raw(texts: list[str], tokenizer: Path, fast: bool) -> tuple[float, float]:
    """(wall, CPU) seconds of one encode_batch(_fast) call over all texts, on a freshly loaded tokenizer."""
    tok = load_tokenizer(tokenizer)
    encode = tok.encode_batch_fast if fast else tok.encode_batch
    t, c = time.perf_counter(), os.times()
    encoded = encode(texts, add_special_tokens=False)
    wall, d = time.perf_counter() - t, os.times()
    del encoded  # freed outside the timing
    return wall, (d.user - c.user) + (d.system - c.system)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "openwebtext"), help="file or folder")
    p.add_argument("--vocab_size", type=int, default=32000)
    p.add_argument("--scales", default="1,4", help="how many times the data is read, comma-separated")
    p.add_argument("--workers", default="1,2", help="pipeline num_workers to compare, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=1000)
    a = p.parse_args()
    scales, workers = [int(x) for x in a.scales.split(",")], [int(x) for x in a.workers.split(",")]
    data = Path(a.data).resolve()

    with tempfile.TemporaryDirectory(prefix="tok-bench-") as tmp_name:
        tmp = Path(tmp_name)
        t = time.perf_counter()
        base = prepare_corpus(
            str(data),
            tmp / "trained",
            vocab_size=a.vocab_size,
            max_docs=None,
            val_fraction=0.05,
            seed=0,
            num_workers=1,
            batch_size=a.batch_size,
            progress=False,
        )
        full_prepare_s = time.perf_counter() - t
        tokenizer = tmp / "trained" / "tokenizer.json"
        results: dict = {
            "data": str(data),
            "vocab_size": base["vocab_size"],
            "cpu_count": os.cpu_count(),
            "load_avg_before": os.getloadavg()[0],
            "repeats": a.repeats,
            "full_prepare_1x_with_tokenizer_training_s": round(full_prepare_s, 3),
            "scales": {},
        }
        for k in scales:
            src = replicate(data, k, tmp)
            texts = [d.text for d in open_source(str(src)).iter()]
            nbytes = sum(len(x.encode("utf-8")) for x in texts)
            runs: dict[str, list[float]] = {
                "encode_batch": [],
                "encode_batch_fast": [],
                **{f"pipeline_{w}w": [] for w in workers},
            }
            cpu: dict[str, list[float]] = {n: [] for n in runs}
            rss: dict[str, dict] = {}
            for _ in range(a.repeats):  # interleaved, so load from other users hits every variant alike
                for name, fast in (("encode_batch", False), ("encode_batch_fast", True)):
                    wall, cpu_s = run_raw(texts, tokenizer, fast)
                    runs[name].append(wall)
                    cpu[name].append(cpu_s)
                for w in workers:
                    r = run_pipeline(src, tokenizer, tmp / f"out-{k}-{w}", w, a.batch_size, base["vocab_size"])
                    assert r["text_bytes"] == nbytes, (r["text_bytes"], nbytes)  # the same text, all of it
                    runs[f"pipeline_{w}w"].append(r["seconds"])
                    cpu[f"pipeline_{w}w"].append(r["cpu_s"])
                    rss[f"pipeline_{w}w"] = {
                        "rss_mb": round(r["rss_mb"], 1),
                        "worker_rss_mb": round(r["worker_rss_mb"], 1),
                    }
            del texts
            row = {
                "text_mb": round(nbytes / 1e6, 3),
                "seconds_min": {n: round(min(v), 4) for n, v in runs.items()},
                "seconds_median": {n: round(statistics.median(v), 4) for n, v in runs.items()},
                "mb_per_s": {n: round(nbytes / 1e6 / min(v), 3) for n, v in runs.items()},
                "cpu_s_per_mb": {n: round(min(v) / (nbytes / 1e6), 3) for n, v in cpu.items()},
                "peak_rss": rss,
            }
            row["encode_batch_over_pipeline"] = {
                f"{w}w": round(min(runs[f"pipeline_{w}w"]) / min(runs["encode_batch"]), 3) for w in workers
            }
            row["encode_batch_fast_over_pipeline"] = {
                f"{w}w": round(min(runs[f"pipeline_{w}w"]) / min(runs["encode_batch_fast"]), 3) for w in workers
            }
            results["scales"][str(k)] = row
        if len(scales) > 1:
            lo, hi = str(scales[0]), str(scales[-1])
            mb_lo, mb_hi = results["scales"][lo]["text_mb"], results["scales"][hi]["text_mb"]
            results["linearity"] = {
                # wall = fixed + size / marginal rate, fitted through the smallest and the largest scale
                "marginal_mb_per_s": {
                    n: round(
                        (mb_hi - mb_lo)
                        / (results["scales"][hi]["seconds_min"][n] - results["scales"][lo]["seconds_min"][n]),
                        3,
                    )
                    for n in results["scales"][lo]["seconds_min"]
                },
                "size_ratio": round(results["scales"][hi]["text_mb"] / results["scales"][lo]["text_mb"], 3),
                "time_ratio": {
                    n: round(results["scales"][hi]["seconds_min"][n] / results["scales"][lo]["seconds_min"][n], 3)
                    for n in results["scales"][lo]["seconds_min"]
                },
                "peak_rss_growth_mb": {
                    n: round(
                        results["scales"][hi]["peak_rss"][n]["rss_mb"] - results["scales"][lo]["peak_rss"][n]["rss_mb"],
                        1,
                    )
                    for n in results["scales"][lo]["peak_rss"]
                },
            }
        results["load_avg_after"] = os.getloadavg()[0]
        results["max_rss_benchmark_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
