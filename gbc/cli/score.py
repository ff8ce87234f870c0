"""``gbc score``: CLIP-style and toxicity scores for every caption, written in the released layout."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import List, Optional, Tuple

import click

from gbc.cli.common import handle_errors, progress, register_user_error

_GRAPH_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".gz", ".zst")


def _is_graph_file(path: Path) -> bool:
    return path.suffix.lower() in _GRAPH_FILE_SUFFIXES and not path.is_dir()


def _stores_of(path: Path) -> List[Path]:
    """The stores SRC names: itself, and/or the shard stores in it (``path/shards/*.lmdb``, or a folder of stores)."""
    from gbc.store.shards import find_shards

    stores = [path] if (path / "data.mdb").exists() else []
    return stores + find_shards(path)


@click.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), default=None,
              help="Write here instead of in place: a store (.lmdb) for a store SRC, or a graph file "
                   "(.jsonl, .json, .parquet). Needed when SRC is a graph file.")
@click.option("--clip", "clip_specs", multiple=True, metavar="[NAME=]SPEC",
              help="CLIP-style model: transformers:<hub id or folder> (CLIP, SigLIP, any AutoModel with image and "
                   "text features) or open_clip:<name>[:<pretrained>]. NAME is the score name written (default: "
                   "from the model). Repeatable.")
@click.option("--toxicity", "toxicity_spec", metavar="SPEC",
              help="Toxicity classifier: transformers:<hub id or folder>; every label's sigmoid score is written.")
@click.option("--no-statistics", is_flag=True, help="Do not fill statistics (n_words, n_tokens).")
@click.option("--rescore", is_flag=True, help="Score again graphs already scored under these names.")
@click.option("--images-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of the images: img_path is looked up there, then its base name (default: the image "
                   "folders the store recorded, then img_path as written).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Regions (and texts) per forward pass [default: 128]; halved for good on out of memory.")
@click.option("--device", default="auto", show_default=True, help="auto, cuda, cuda:1, mps or cpu.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True,
              help="CLIP weights precision (auto: bfloat16 on CUDA, float32 on CPU).")
@click.option("--shard", metavar="I/N", help="Score only shard I of N of the graphs (stable hash of the key): "
                                             "one process per GPU on the same store.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
@handle_errors
def score(src: Path, out: Optional[Path], clip_specs: Tuple[str, ...], toxicity_spec: Optional[str], no_statistics: bool,
          rescore: bool, images_root: Optional[Path], batch_size: Optional[int], device: str, dtype: str,
          shard: Optional[str], overwrite: bool, as_json: bool, show_progress: Optional[bool]):
    """Score every caption of the graphs in SRC (a store, a folder of store shards or a graph file).

    Each caption gets the cosine similarity between its text and its vertex's region (the whole
    image for the image vertex, the box for the others) under each --clip model, in
    clip_scores; --toxicity fills toxicity_scores; statistics gets n_words and n_tokens. A store
    is scored in place, committed batch by batch: a rerun skips graphs already scored under the
    same names (unless --rescore), so a killed run loses nothing committed. Graphs whose image
    is missing or unreadable are kept, counted, and get no CLIP scores.

    \b
    Examples:
      gbc score graphs.lmdb --clip transformers:openai/clip-vit-large-patch14-336 --images-root images/
      gbc score graphs.jsonl -o scored.jsonl --clip l14=transformers:openai/clip-vit-large-patch14 \\
          --toxicity transformers:path/to/toxicity-model --images-root images/
    """
    from gbc.annotators.backends.base import BackendError
    from gbc.scoring.scorer import CaptionScorer, ScoreSummary
    from gbc.store.lmdb_env import StoreError

    register_user_error(BackendError)
    register_user_error(StoreError)
    register_user_error(FileExistsError)
    if not clip_specs and not toxicity_spec:
        raise click.UsageError("give at least one --clip model or a --toxicity model")
    if images_root is not None and not images_root.is_dir():
        raise click.BadParameter(f"{images_root} is not a folder", param_hint="--images-root")
    if not src.exists():
        raise FileNotFoundError(f"no such file or store: {src}")
    shard_filter = _shard_filter(shard)
    stores = [] if _is_graph_file(src) else _stores_of(src)
    if not stores and not _is_graph_file(src):
        raise FileNotFoundError(f"{src} is neither a graph store, a folder of store shards nor a graph file")
    roots = [str(images_root)] if images_root else _remembered_image_roots(src, stores)
    scorer = CaptionScorer.from_specs(clip=clip_specs, toxicity=toxicity_spec, device=device, dtype=dtype,
                                      batch_size=batch_size, statistics=not no_statistics, rescore=rescore,
                                      images_root=roots or None)
    summary = ScoreSummary()
    with progress(desc="score", unit=" captions", disable=None if show_progress is None else not show_progress) as bar:
        def advance(batch) -> None:
            bar.update(sum(r.captions for r in batch))
            bar.set_postfix_str(f"graphs={summary.graphs} caps/s={summary.captions_per_second:.0f}", refresh=False)

        try:
            if out is not None and _is_graph_file(out):
                _score_to_file(src, out, scorer, summary, shard_filter, overwrite, advance)
                target = str(out)
            elif _is_graph_file(src):
                raise click.UsageError("SRC is a graph file: give -o OUT.jsonl / .json / .parquet "
                                       "(or convert it to a store first with gbc convert)")
            else:
                if out is not None:
                    stores = [_copy_into(out, src, stores)]
                for store_path in stores:
                    _score_store_in_place(store_path, scorer, summary, shard_filter, advance, clip_specs, toxicity_spec)
                target = str(out or src)
        finally:
            scorer.close()
    result = dict(summary.to_dict(), output=target, score_names=scorer.score_names,
                  toxicity=toxicity_spec, shard=shard)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_summary(summary, result)


def _remembered_image_roots(src: Path, stores: List[Path]) -> List[str]:
    """The image folders the stores recorded when they were annotated (``image_roots`` in their meta)."""
    from gbc.store.reader import open_graphs, recorded_image_roots

    if not stores:
        return []  # a graph file records none
    with open_graphs(src) as reader:
        return recorded_image_roots(reader)


def _shard_filter(shard: Optional[str]):
    if not shard:
        return None
    from gbc.distributed.sharding import parse_shard, shard_of

    index, count = parse_shard(shard)
    return lambda key: shard_of(key, count) == index


def _score_to_file(src: Path, out: Path, scorer, summary, shard_filter, overwrite: bool, advance) -> None:
    from gbc.store.files import write_graphs
    from gbc.store.reader import open_graphs

    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; give --overwrite to replace it")
    if out.resolve() == src.resolve():
        raise ValueError("the output file must differ from SRC (a store is scored in place without -o)")

    def graphs():
        # a store with its shards reads as one (MultiStore); a graph file is checked while read
        with open_graphs(src) as reader:
            pairs = ((k, g) for k, g in reader.items() if shard_filter is None or shard_filter(k))
            for batch in scorer.score_batches(pairs, summary):
                advance(batch)
                for result in batch:
                    yield result.graph

    write_graphs(str(out), graphs())


def _copy_into(out: Path, src: Path, stores: List[Path]) -> Path:
    """``-o OUT`` for a store: a copy of SRC made once (a rerun with the same SRC resumes in OUT)."""
    from gbc.store.lmdb_store import GraphStore

    origin = str(src.resolve())
    if out.exists():
        if not (out / "data.mdb").exists():
            raise FileExistsError(f"{out} exists and is not a graph store")
        with GraphStore(out) as existing:
            made_from = existing.meta.get("scored_copy_of")
        if made_from != origin:
            raise FileExistsError(f"{out} exists and is not a scored copy of {src}; remove it or choose another output")
        return out
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    try:
        with GraphStore(tmp, readonly=False) as target:
            for path in stores:
                with GraphStore(path) as source:
                    target.copy_from(source)
            target.update_meta({"scored_copy_of": origin})
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _score_store_in_place(path: Path, scorer, summary, shard_filter, advance, clip_specs, toxicity_spec) -> None:
    """Each batch of changed graphs is written in one transaction; graphs already scored are not rewritten."""
    from gbc.store.lmdb_store import GraphStore
    from gbc.store.writer_lock import WriterLock

    # one writer at a time: scoring a store that a run (or another scoring) is writing is refused
    with WriterLock(path, command="gbc score"), GraphStore(path, readonly=False) as store:
        pairs = ((k, g) for k, g in store.items() if shard_filter is None or shard_filter(k))
        for batch in scorer.score_batches(pairs, summary):
            changed = [(r.key, r.graph) for r in batch if r.changed]
            if changed:
                store.put_many(changed, batch_size=len(changed))
            advance(batch)
        record = dict(store.meta.get("scores") or {})
        record.update({name: spec for name, spec in (_name_and_spec(s) for s in clip_specs)})
        if toxicity_spec:
            record["toxicity"] = toxicity_spec
        store.update_meta({"scores": record, "last_scoring": {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})


def _name_and_spec(text: str) -> Tuple[str, str]:
    from gbc.scoring.models import parse_clip_option

    return parse_clip_option(text)


def _print_summary(s, result) -> None:
    click.echo(f"graphs read:      {s.graphs}")
    click.echo(f"graphs scored:    {s.scored}")
    if s.already_scored:
        click.echo(f"already scored (skipped): {s.already_scored}")
    if s.image_missing:
        click.echo(f"image missing (kept, no CLIP scores): {s.image_missing}")
        if not s.scored:
            click.echo("  (no image was found: give --images-root)", err=True)
    if s.image_unreadable:
        click.echo(f"image unreadable (kept, no CLIP scores): {s.image_unreadable}")
    click.echo(f"captions scored:  {s.captions}")
    if result["score_names"]:
        click.echo(f"CLIP scores written: {s.clip_scores} ({', '.join(result['score_names'])}); "
                   f"regions encoded: {s.regions}; texts truncated: {s.truncated}")
    click.echo(f"time: {s.seconds:.1f} s ({s.captions_per_second:.1f} captions/s)")
    click.echo(f"output: {result['output']}")
    for err in s.errors:
        click.echo(f"error: {err}", err=True)
