"""Inputs at scale: a URL list and tar shards read by `gbc annotate`, streamed.

Builds in a scratch folder a URL list of N rows (Parquet, URLs on a local HTTP server) and
100 WebDataset tar shards holding N samples in all, plus a store that already holds all but
one image in 1,000 of them. Then, each in its own process:

1. ``gbc annotate`` (scripted backends) over the list, then over the shards, at 10k, 100k and
   N inputs, against a copy of that store: it reads every row or sample, asks the store about
   each one and annotates the 0.1% left (downloading them for the list). Measured: time to the
   first image handed to the engine, total time, and the process's peak memory (anonymous
   memory, i.e. Python's own, sampled from /proc; the resident total also counts LMDB pages
   mapped from the store file). Baseline in the same run: a driver that lists every input up
   front and holds the set of finished keys (what `gbc annotate` did before streaming).
2. Resume start-up: a store holding the first 90% of the list; time until the first image
   to annotate is reached (every finished row checked against the store on the way).
3. Download throughput: images/s fetched from the local server (another process) with
   1 connection (baseline) and with 16 and 64 at once.

    python bench/bench_inputs.py --quick      # 20,000 inputs (about a minute)
    python bench/bench_inputs.py              # 1,000,000 inputs (tens of minutes, ~3 GB of scratch)
    python bench/bench_inputs.py --parts resume   # one part only
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

AIM_PEAK_MB = 300
AIM_RESUME_S = 30.0
SHARDS = 100
#: One input in this many is left for the run to annotate (the rest is in the store).
KEEP_ONE_IN = 1000


# ---------------------------------------------------------------------------- fixtures
def tiny_png(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (seed % 256, 80, 160)).save(buf, format="PNG")
    return buf.getvalue()


def serve(port_file: str) -> None:
    """Child: an HTTP server on 127.0.0.1 answering /img/N.png with a small PNG."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies = [tiny_png(i) for i in range(256)]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            body = bodies[int(self.path.rsplit("/", 1)[-1].split(".")[0]) % 256]
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    Path(port_file).write_text(str(httpd.server_address[1]))
    httpd.serve_forever()


def start_server(scratch: Path):
    port_file = scratch / "port"
    proc = subprocess.Popen([sys.executable, __file__, "--child-serve", str(port_file)])
    while not port_file.exists() or not port_file.read_text():
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port_file.read_text()}"


def write_list(path: Path, n: int, base: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    step = 200_000
    with pq.ParquetWriter(path, pa.schema([("url", pa.string())])) as writer:
        for start in range(0, n, step):
            urls = [f"{base}/img/{i}.png" for i in range(start, min(n, start + step))]
            writer.write_table(pa.table({"url": urls}))


def write_shards(folder: Path, n: int) -> list:
    """``SHARDS`` tar shards holding ``n`` samples in all (one small PNG each); returns their keys' count."""
    import tarfile

    folder.mkdir(parents=True, exist_ok=True)
    per = -(-n // SHARDS)
    data = tiny_png(7)
    written = 0
    for s in range(SHARDS):
        with tarfile.open(folder / f"{s:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
            for i in range(min(per, n - written)):
                info = tarfile.TarInfo(f"{s:05d}{i:05d}.png")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                written += 1
    return [f"{s:05d}.tar" for s in range(SHARDS)]


def shard_keys(n: int):
    per = -(-n // SHARDS)
    count = 0
    for s in range(SHARDS):
        for i in range(per):
            if count == n:
                return
            count += 1
            yield f"{s:05d}{i:05d}", f"{s:05d}.tar:{i}"


def fill_store(path: Path, keys) -> int:
    """Write ``done`` status records for ``(key, origin)`` pairs, 20,000 per transaction
    (status only: resuming looks at nothing else)."""
    from gbc.store.lmdb_store import StatusRecord, GraphStore

    store = GraphStore(str(path), readonly=False)
    total = 0
    try:
        batch = []

        def flush():
            def write(txn):
                db = store._db(b"status")
                for k, v in batch:
                    txn.put(k, v, db=db)
            store._write(write)
            batch.clear()

        for key, origin in keys:
            record = StatusRecord(status="done", time=1.0, origin=origin)
            batch.append((key.encode(), b"D" + record.model_dump_json().encode()))
            total += 1
            if len(batch) >= 20_000:
                flush()
        if batch:
            flush()
    finally:
        store.close()
    return total


# ---------------------------------------------------------------------------- measuring a process
class Sampler:
    """Peak anonymous and resident memory of a process, sampled from /proc every 20 ms."""

    def __init__(self, pid: int):
        self.pid, self.anon, self.rss = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("RssAnon:"):
                    self.anon = max(self.anon, int(line.split()[1]) * 1024)
                elif line.startswith("VmRSS:"):
                    self.rss = max(self.rss, int(line.split()[1]) * 1024)
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self._thread.join()


def run_measured(cmd, env=None) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampler = Sampler(proc.pid)
    out, err = proc.communicate()
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{err[-3000:]}")
    return {"seconds": time.perf_counter() - started, "anon_mb": sampler.anon / 2**20, "rss_mb": sampler.rss / 2**20,
            "stdout": out, "stderr": err}


FIRST_IMAGE_ENV = "GBC_BENCH_FIRST_IMAGE_FILE"


def child_annotate(args) -> None:
    """Child: ``gbc annotate`` as the CLI runs it, noting when the engine gets its first image."""
    from gbc.inputs import stream as stream_module

    started = time.perf_counter()
    original = stream_module.InputStream.__iter__
    marker = os.environ[FIRST_IMAGE_ENV]

    def noting_iter(self):
        first = True
        for item in original(self):
            if first:
                Path(marker).write_text(str(time.perf_counter() - started))
                first = False
            yield item

    stream_module.InputStream.__iter__ = noting_iter
    from gbc.cli.main import cli

    cli.main(args=args, standalone_mode=True)


def child_baseline(args) -> None:
    """Child: the listing approach: every input as an item in a list, and the set of finished keys."""
    from gbc.inputs import resolve
    from gbc.inputs.folders import discover_images  # noqa: F401  (same imports as a run)
    from gbc.inputs.tars import iter_tar
    from gbc.inputs.urllists import Columns, iter_list
    from gbc.store.lmdb_store import GraphStore

    kind, inputs, store_path = args
    started = time.perf_counter()
    store = GraphStore(store_path, readonly=True)
    finished = set(store.keys(status="done")) | set(store.keys(status="failed"))
    items = []
    for unit in resolve([inputs]):
        if unit.kind == "list":
            items.extend(iter_list(unit.location, unit.fmt, Columns(), unit.label))
        else:
            items.extend(iter_tar(unit.location, unit.label, lambda keys, origins: [None] * len(keys), lambda m: None))
    todo = [s for s in items if s.key not in finished]
    print(json.dumps({"items": len(items), "todo": len(todo), "first_image_s": time.perf_counter() - started}))


# ---------------------------------------------------------------------------- the parts
def annotate_cmd(inputs: str, store: Path, extra=()):
    return [sys.executable, __file__, "--child-annotate", "annotate", inputs, "-o", str(store), "--mllm", "scripted",
            "--detector", "scripted", "--no-entity", "--no-progress", "--json", "--download-concurrency", "32", *extra]


def part_streaming(scratch: Path, sizes, base_store: Path) -> list:
    rows = []
    for kind in ("list", "shards"):
        for n in sizes[kind]:
            inputs = str(scratch / f"list-{n}" / "urls.parquet") if kind == "list" else str(scratch / f"shards-{n}")
            store = scratch / f"run-{kind}-{n}.lmdb"
            shutil.rmtree(store, ignore_errors=True)
            shutil.copytree(base_store, store)
            marker = scratch / "first-image"
            marker.unlink(missing_ok=True)
            env = {**os.environ, FIRST_IMAGE_ENV: str(marker)}
            run = run_measured(annotate_cmd(inputs, store), env=env)
            summary = json.loads(run["stdout"])
            base = run_measured([sys.executable, __file__, "--child-baseline", kind, inputs, str(base_store)])
            base_out = json.loads(base["stdout"])
            rows.append({
                "kind": kind, "inputs": n, "annotated": summary["images"], "done": summary["done"],
                "failed": summary["failed"], "skipped": summary["skipped"],
                "first_image_s": float(marker.read_text()) if marker.exists() else None,
                "total_s": run["seconds"], "peak_anon_mb": run["anon_mb"], "peak_rss_mb": run["rss_mb"],
                "baseline_first_image_s": base_out["first_image_s"], "baseline_peak_anon_mb": base["anon_mb"],
            })
            shutil.rmtree(store, ignore_errors=True)
            print_row(rows[-1])
    return rows


def print_row(r: dict) -> None:
    print(f"  {r['kind']:<6} {r['inputs']:>9,} inputs: {r['annotated']:>5} annotated ({r['done']} done, "
          f"{r['failed']} failed), first image {r['first_image_s']:.2f} s (listing first: "
          f"{r['baseline_first_image_s']:.2f} s), total {r['total_s']:.1f} s; peak memory {r['peak_anon_mb']:.0f} MB "
          f"anonymous / {r['peak_rss_mb']:.0f} MB resident (listing driver: {r['baseline_peak_anon_mb']:.0f} MB, "
          f"x{r['baseline_peak_anon_mb'] / max(r['peak_anon_mb'], 1e-9):.1f})", flush=True)


def part_resume(scratch: Path, n: int) -> dict:
    done = int(n * 0.9)
    store = scratch / "resume.lmdb"
    shutil.rmtree(store, ignore_errors=True)
    t = time.perf_counter()
    fill_store(store, ((f"urls/{i:09d}", f"urls.parquet:{i}") for i in range(done)))
    fill_s = time.perf_counter() - t
    marker = scratch / "first-image"
    marker.unlink(missing_ok=True)
    env = {**os.environ, FIRST_IMAGE_ENV: str(marker)}
    run = run_measured(annotate_cmd(str(scratch / f"list-{n}" / "urls.parquet"), store, ["--limit", "200"]), env=env)
    summary = json.loads(run["stdout"])
    first = float(marker.read_text())
    base = run_measured([sys.executable, __file__, "--child-baseline", "list",
                         str(scratch / f"list-{n}" / "urls.parquet"), str(store)])
    out = {"store_holds": done, "list": n, "first_image_s": first, "skipped": summary["skipped"],
           "annotated": summary["images"], "peak_anon_mb": run["anon_mb"], "fill_s": fill_s,
           "baseline_first_image_s": json.loads(base["stdout"])["first_image_s"], "baseline_peak_anon_mb": base["anon_mb"]}
    print(f"  store holding {done:,} of {n:,}: first image to annotate after {first:.1f} s "
          f"(aim < {AIM_RESUME_S:.0f} s; listing first: {out['baseline_first_image_s']:.1f} s); "
          f"{summary['skipped']:,} skipped, {summary['images']} annotated (--limit 200), "
          f"peak {run['anon_mb']:.0f} MB anonymous (listing: {base['anon_mb']:.0f} MB)", flush=True)
    shutil.rmtree(store, ignore_errors=True)
    return out


def part_download(base: str, count: int) -> list:
    from gbc.inputs import DownloadOptions, Downloader, ImageSource

    rows = []
    for concurrency in (1, 16, 64):
        sources = (ImageSource(key=str(i), path=f"{base}/img/{i}.png", url=f"{base}/img/{i}.png") for i in range(count))
        with Downloader(DownloadOptions(concurrency=concurrency)) as dl:
            t = time.perf_counter()
            got = sum(1 for s in dl.stream(sources) if s.data is not None)
            seconds = time.perf_counter() - t
        rows.append({"concurrency": concurrency, "images": got, "per_s": got / seconds})
    for r in rows:
        print(f"  {r['concurrency']:>2} at once: {r['per_s']:.0f} images/s ({r['images']} images; "
              f"x{r['per_s'] / rows[0]['per_s']:.1f} vs 1 at once)", flush=True)
    return rows


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child-serve":
        return serve(sys.argv[2])
    if len(sys.argv) > 1 and sys.argv[1] == "--child-annotate":
        return child_annotate(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--child-baseline":
        return child_baseline(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="largest number of inputs (list rows, tar samples)")
    parser.add_argument("--quick", action="store_true", help="20,000 inputs")
    parser.add_argument("--tar-n", type=int, default=None, help="largest number of tar samples (default: --n)")
    parser.add_argument("--downloads", type=int, default=None, help="images fetched per download setting")
    parser.add_argument("--keep", help="scratch folder to use and keep")
    parser.add_argument("--json", dest="json_out", help="write the figures to this file")
    parser.add_argument("--parts", default="streaming,resume,download",
                        help="comma-separated parts to run: streaming, resume, download (default: all three)")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"streaming", "resume", "download"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    n = 20_000 if args.quick else args.n
    sizes = sorted({min(n, s) for s in (10_000, 100_000, n)})
    tar_n = min(n, args.tar_n or n)
    tar_sizes = sorted({min(tar_n, s) for s in sizes})
    downloads = args.downloads or (2_000 if args.quick else 20_000)
    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gbc-bench-inputs-"))
    scratch.mkdir(parents=True, exist_ok=True)
    server, base = start_server(scratch)
    try:
        print(f"inputs: URL lists of {', '.join(f'{s:,}' for s in sizes)} rows; {SHARDS} tar shards holding "
              f"{', '.join(f'{s:,}' for s in tar_sizes)} samples; scratch {scratch}", flush=True)
        t = time.perf_counter()
        for size in sizes:  # always written: the server's port changes from run to run
            write_list(scratch / f"list-{size}" / "urls.parquet", size, base)
        for size in (tar_sizes if "streaming" in parts else []):
            if not (scratch / f"shards-{size}").exists():
                write_shards(scratch / f"shards-{size}", size)
        base_store = scratch / f"base-{n}-{tar_n}.lmdb"
        # The same keys and origins for every size: lists are prefixes of each other, and a
        # shard sample's key and position do not depend on how many samples its shard holds.
        if "streaming" in parts and not (base_store / "data.mdb").exists():
            partial = base_store.with_name(base_store.name + ".part")
            shutil.rmtree(partial, ignore_errors=True)
            fill_store(partial, ((f"urls/{i:09d}", f"urls.parquet:{i}") for i in range(n) if i % KEEP_ONE_IN))
            fill_store(partial, (pair for i, pair in enumerate(shard_keys(tar_n)) if i % KEEP_ONE_IN))
            partial.rename(base_store)
        if "streaming" in parts:
            kept = (n - -(-n // KEEP_ONE_IN)) + (tar_n - -(-tar_n // KEEP_ONE_IN))
            print(f"built inputs and a store of {kept:,} finished images in {time.perf_counter() - t:.0f} s", flush=True)
        else:
            print(f"built the inputs in {time.perf_counter() - t:.0f} s", flush=True)
        figures = {"sizes": sizes, "tar_sizes": tar_sizes}
        if "streaming" in parts:
            print("1. streaming (gbc annotate, scripted backends, store holds all but 1 in 1,000):", flush=True)
            figures["streaming"] = part_streaming(scratch, {"list": sizes, "shards": tar_sizes}, base_store)
            peaks = [r["peak_anon_mb"] for r in figures["streaming"]]
            print(f"summary: peak driver memory {min(peaks):.0f}-{max(peaks):.0f} MB anonymous across "
                  f"{sizes[0]:,}-{sizes[-1]:,} inputs (aim < {AIM_PEAK_MB} MB, flat)", flush=True)
        if "resume" in parts:
            print("2. resume start-up:", flush=True)
            figures["resume"] = part_resume(scratch, n)
            print(f"summary: resume start-up {figures['resume']['first_image_s']:.1f} s "
                  f"(aim < {AIM_RESUME_S:.0f} s)", flush=True)
        if "download" in parts:
            print("3. download throughput (local server in another process):", flush=True)
            figures["download"] = part_download(base, downloads)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(figures, indent=2))
    finally:
        server.terminate()
        server.wait()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
