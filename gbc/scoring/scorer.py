"""Scoring the captions of graphs: CLIP-style scores against each vertex's region, toxicity, statistics.

Work is batched across graphs, not per caption: graphs are gathered until their regions fill
a batch; a helper thread loads their images, crops the regions and prepares the model inputs
of the next batch while the models run on the current one. Each region (a distinct pixel box
of one image) is encoded once per model however many captions it has, and each distinct text
once per batch.

Scores are written in the released layout: ``desc.clip_scores = {"scores": {name: cosine},
"truncation": bool}``, ``desc.toxicity_scores = {label: sigmoid}``, ``desc.statistics =
{"n_words", "n_tokens"}``. A graph already scored under every requested name is passed through
untouched unless ``rescore``.

>>> scorer = CaptionScorer.from_specs(clip=["transformers:openai/clip-vit-base-patch32"])  # doctest: +SKIP
>>> for graph in score_graphs(gbc.read_graphs("graphs.jsonl"), scorer):  # doctest: +SKIP
...     print(graph.root.descs[0].clip_scores.scores)
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from gbc._threads import HelperThread, Pending
from gbc.schemas import Bbox, GbcGraph, geometry
from gbc.schemas.description import CaptionStatistics, ClipScores, Description
from gbc.scoring.models import ClipScoreModel, ModelOptions, ToxicityModel, create_clip_model, parse_clip_option
from gbc.store.records import keyed

#: Threads that read, crop and preprocess images (decoding and resizing release the GIL).
DEFAULT_LOAD_THREADS = max(1, min(8, (os.cpu_count() or 2) - 1))
#: Fewest regions per preprocessing task when a batch is split across the threads.
MIN_PREPROCESS_CHUNK = 16
#: Messages about unreadable images kept in the summary (the count is always exact).
MAX_REPORTED_ERRORS = 20

GraphItem = Union[GbcGraph, Tuple[str, GbcGraph]]
#: ``graph -> PIL image`` (RGB), ``None`` when the image cannot be found; raises when unreadable.
ImageLoader = Callable[[GbcGraph], Any]


def reference_crop_box(bbox: Bbox, width: int, height: int) -> Tuple[int, int, int, int]:
    """The pixel box of a region as the reference crops it: each coordinate times the image
    size, truncated to an integer (no margin, no rounding); at least one pixel wide and high."""
    return geometry.to_pixels(bbox.to_xyxy(), width, height, truncate=True)


def crop_region(image, bbox: Bbox):
    """The crop of ``image`` (PIL) for ``bbox``; the whole image object when the box covers it."""
    box = reference_crop_box(bbox, *image.size)
    if box == (0, 0, image.size[0], image.size[1]):
        return image
    return image.crop(box)


def file_image_loader(images_root: Union[None, str, os.PathLike, Sequence[Union[str, os.PathLike]]] = None) -> ImageLoader:
    """Loads a graph's image from ``img_path`` as ``gbc export`` looks it up: under ``images_root``
    (or under each of several roots in turn, then as recorded), else at ``img_path`` itself."""
    from gbc.export.images import find_image

    if images_root is None or isinstance(images_root, (str, os.PathLike)):
        roots: List[Any] = [images_root]
    else:
        roots = [*images_root, None]

    def load(graph: GbcGraph):
        path = next((p for p in (find_image(graph, root) for root in roots) if p is not None), None)
        if path is None:
            return None
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            return im.convert("RGB") if im.mode != "RGB" else im.copy()

    return load


@dataclass
class ScoredGraph:
    """One graph after scoring. ``status``: ``scored``, ``already scored``, ``image missing`` or
    ``image unreadable`` (the last two keep their graph; text-only scores are still written)."""

    key: str
    graph: GbcGraph
    status: str
    changed: bool
    captions: int = 0
    error: Optional[str] = None


@dataclass
class ScoreSummary:
    graphs: int = 0
    scored: int = 0
    already_scored: int = 0
    image_missing: int = 0
    image_unreadable: int = 0
    captions: int = 0
    clip_scores: int = 0
    truncated: int = 0
    regions: int = 0
    seconds: float = 0.0
    errors: List[str] = field(default_factory=list)

    def add(self, result: ScoredGraph) -> None:
        self.graphs += 1
        attribute = {"scored": "scored", "already scored": "already_scored", "image missing": "image_missing",
                     "image unreadable": "image_unreadable"}[result.status]
        setattr(self, attribute, getattr(self, attribute) + 1)
        if result.error and len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(f"{result.key}: {result.error}")

    @property
    def captions_per_second(self) -> float:
        return self.captions / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {
            "graphs": self.graphs, "scored": self.scored, "already_scored": self.already_scored,
            "image_missing": self.image_missing, "image_unreadable": self.image_unreadable,
            "captions": self.captions, "clip_scores": self.clip_scores, "truncated": self.truncated,
            "regions": self.regions, "seconds": round(self.seconds, 3),
            "captions_per_second": round(self.captions_per_second, 1), "errors": list(self.errors),
        }


@dataclass
class _Needs:
    clip: Tuple[str, ...]
    toxicity: bool
    statistics: bool

    @property
    def anything(self) -> bool:
        return bool(self.clip) or self.toxicity or self.statistics


@dataclass
class _Entry:
    key: str
    graph: GbcGraph
    needs: _Needs
    status: str = "scored"
    error: Optional[str] = None
    # (vertex index, desc index, region index or None, text index) per caption
    captions: List[Tuple[int, int, Optional[int], int]] = field(default_factory=list)


@dataclass
class _Batch:
    entries: List[_Entry]
    texts: List[str] = field(default_factory=list)
    n_regions: int = 0
    # per model name: (region indices, text indices, prepared images, prepared texts)
    clip_inputs: Dict[str, Tuple[List[int], List[int], Any, Any]] = field(default_factory=dict)
    toxicity_inputs: Optional[Tuple[List[int], Any]] = None
    token_counts: Dict[int, int] = field(default_factory=dict)


class CaptionScorer:
    """Scores every caption of graphs with CLIP-style models and a toxicity classifier.

    ``clip_models``: scorers (see ``gbc.scoring.models``) whose ``name`` is the score name
    written; ``toxicity``: an optional ``ToxicityModel``; ``statistics``: fill ``n_words`` and
    ``n_tokens`` (tokens of the first CLIP model's tokenizer, start and end included).
    ``regions_per_batch``: regions gathered (across graphs) before the models run.
    ``images_root``: a folder, or several tried in turn, where ``img_path`` is looked up (see
    ``file_image_loader``); ``image_loader`` replaces that lookup altogether.
    """

    def __init__(self, clip_models: Sequence[ClipScoreModel] = (), toxicity: Optional[ToxicityModel] = None, *,
                 statistics: bool = True, rescore: bool = False, images_root=None,
                 image_loader: Optional[ImageLoader] = None, regions_per_batch: Optional[int] = None,
                 load_threads: int = DEFAULT_LOAD_THREADS):
        names = [m.name for m in clip_models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"two CLIP models write the same score name: {', '.join(duplicates)}; name them with NAME=SPEC")
        if not clip_models and toxicity is None and not statistics:
            raise ValueError("nothing to score: give a CLIP model, a toxicity model or statistics")
        self.clip_models = list(clip_models)
        self.toxicity = toxicity
        self.statistics = statistics
        self.rescore = rescore
        self.image_loader = image_loader or file_image_loader(images_root)
        sizes = [m.options.batch_size for m in self.clip_models] or [ModelOptions().batch_size]
        self.regions_per_batch = max(1, int(regions_per_batch or max(sizes)))
        self.load_threads = max(1, int(load_threads))
        self._fallback_counter: Optional[Callable[[str], int]] = None

    @classmethod
    def from_specs(cls, clip: Sequence[str] = (), toxicity: Optional[str] = None, *, device: str = "auto",
                   dtype: str = "auto", batch_size: Optional[int] = None, **kwargs) -> "CaptionScorer":
        """Scorers from spec strings (``[NAME=]transformers:<id|folder>``, ``open_clip:<name>[:<pretrained>]``)."""
        options = ModelOptions(device=device, dtype=dtype)
        if batch_size:
            options.batch_size = batch_size
        models = [create_clip_model(spec, name, ModelOptions(**vars(options))) for name, spec in map(parse_clip_option, clip)]
        tox = ToxicityModel(toxicity, ModelOptions(**vars(options))) if toxicity else None
        return cls(models, tox, **kwargs)

    @property
    def score_names(self) -> List[str]:
        return [m.name for m in self.clip_models]

    def load(self) -> None:
        """Load every model now (a model that cannot load raises ``BackendUnavailable``)."""
        for model in self.clip_models:
            model.load()
        if self.toxicity is not None:
            self.toxicity.load()

    def close(self) -> None:
        for model in self.clip_models:
            model.close()
        if self.toxicity is not None:
            self.toxicity.close()

    # ------------------------------------------------------------------ what a graph needs
    def needs(self, graph: GbcGraph) -> _Needs:
        descs = [d for v in graph.vertices for d in v.descs]
        if self.rescore:
            return _Needs(tuple(self.score_names), self.toxicity is not None, self.statistics and bool(descs))
        clip = tuple(name for name in self.score_names
                     if any(d.clip_scores is None or not d.clip_scores.scores or name not in d.clip_scores.scores for d in descs))
        toxicity = self.toxicity is not None and any(d.toxicity_scores is None for d in descs)
        statistics = self.statistics and any(_missing_statistics(d) for d in descs)
        return _Needs(clip, toxicity, statistics)

    # ------------------------------------------------------------------ running
    def score(self, items: Iterable[GraphItem]) -> Iterator[ScoredGraph]:
        """Score graphs (or ``(key, graph)`` pairs); yields them in input order, changed in place."""
        for batch in self.score_batches(items):
            yield from batch

    def score_batches(self, items: Iterable[GraphItem], summary: Optional[ScoreSummary] = None) -> Iterator[List[ScoredGraph]]:
        """Like ``score`` but one list per batch of graphs (commit each list as one transaction)."""
        self.load()
        summary = summary if summary is not None else ScoreSummary()
        started = time.perf_counter()
        # the next batch is prepared (images read, crops made) while the models run this one
        preparer = HelperThread("gbc-score-prepare")
        pending: Optional[Pending] = None
        try:
            with ThreadPoolExecutor(self.load_threads, thread_name_prefix="gbc-score-load") as loaders:
                try:
                    for entries in self._groups(keyed(items)):
                        previous, pending = pending, preparer.submit(lambda entries=entries: self._prepare(entries, loaders))
                        if previous is not None:
                            yield self._finish(previous.result(), summary, started)
                    if pending is not None:
                        last, pending = pending, None
                        yield self._finish(last.result(), summary, started)
                finally:
                    if pending is not None:
                        pending.wait()  # stopped early: the loaders stay open until it is done
        finally:
            preparer.close()

    def _finish(self, batch: _Batch, summary: ScoreSummary, started: float) -> List[ScoredGraph]:
        results = self._run(batch, summary)
        for result in results:
            summary.add(result)
        summary.seconds = time.perf_counter() - started
        return results

    def _groups(self, pairs: Iterator[Tuple[str, GbcGraph]]) -> Iterator[List[_Entry]]:
        entries: List[_Entry] = []
        regions = 0
        for key, graph in pairs:
            needs = self.needs(graph)
            entries.append(_Entry(key, graph, needs, status="scored" if needs.anything else "already scored"))
            if needs.clip:
                regions += len({v.bbox.to_xyxy() for v in graph.vertices if v.descs})
            if regions >= self.regions_per_batch or len(entries) >= 4 * self.regions_per_batch:
                yield entries
                entries, regions = [], 0
        if entries:
            yield entries

    def _prepare(self, entries: List[_Entry], loaders: ThreadPoolExecutor) -> _Batch:
        """CPU side of a batch: images, crops, distinct texts and every model's inputs."""
        batch = _Batch(entries)
        text_index: Dict[str, int] = {}
        want_image = [e for e in entries if e.needs.clip]
        images = dict(zip(map(id, want_image), loaders.map(self._load_image, [e.graph for e in want_image])))
        crops: List[Any] = []
        per_model: Dict[str, Tuple[List[int], List[int]]] = {m.name: ([], []) for m in self.clip_models}
        toxicity_texts: List[int] = []
        for entry in entries:
            if entry.status == "already scored":
                continue
            image = None
            if entry.needs.clip:
                image, error = images[id(entry)]
                if error is not None:
                    entry.status, entry.error = "image unreadable", error
                elif image is None:
                    entry.status = "image missing"
            region_of_box: Dict[Tuple[int, int, int, int], int] = {}
            for vi, vertex in enumerate(entry.graph.vertices):
                region = None
                if image is not None and vertex.descs:
                    box = reference_crop_box(vertex.bbox, *image.size)
                    region = region_of_box.get(box)
                    if region is None:
                        region = region_of_box[box] = len(crops)
                        crops.append(crop_region(image, vertex.bbox))
                for di, desc in enumerate(vertex.descs):
                    ti = text_index.setdefault(desc.text, len(text_index))
                    entry.captions.append((vi, di, region, ti))
            if image is not None:
                for name in entry.needs.clip:
                    regions, texts = per_model[name]
                    regions.extend(region_of_box.values())
                    texts.extend(ti for _, _, _, ti in entry.captions)
            if entry.needs.toxicity:
                toxicity_texts.extend(ti for _, _, _, ti in entry.captions)
        batch.texts = list(text_index)
        batch.n_regions = len(crops)
        for model in self.clip_models:
            regions, texts = per_model[model.name]
            if not regions:
                continue
            regions = sorted(set(regions))
            texts = sorted(set(texts))
            batch.clip_inputs[model.name] = (regions, texts, self._prepare_images(model, [crops[i] for i in regions], loaders),
                                             model.prepare_texts([batch.texts[i] for i in texts]))
        if toxicity_texts:
            texts = sorted(set(toxicity_texts))
            batch.toxicity_inputs = (texts, self.toxicity.prepare_texts([batch.texts[i] for i in texts]))
        stats_texts = sorted({ti for e in entries if e.needs.statistics and e.status != "already scored" for _, _, _, ti in e.captions})
        if stats_texts:
            batch.token_counts = dict(zip(stats_texts, self._count_tokens([batch.texts[i] for i in stats_texts])))
        return batch

    def _prepare_images(self, model: ClipScoreModel, crops: List[Any], pool: ThreadPoolExecutor) -> Dict[str, Any]:
        """The model's image preprocessing, split across threads (one image's result never
        depends on the others, so the split changes nothing)."""
        size = max(MIN_PREPROCESS_CHUNK, math.ceil(len(crops) / self.load_threads))
        if len(crops) <= size:
            return model.prepare_images(crops)
        import torch

        parts = list(pool.map(model.prepare_images, [crops[i:i + size] for i in range(0, len(crops), size)]))
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    def _load_image(self, graph: GbcGraph) -> Tuple[Any, Optional[str]]:
        try:
            return self.image_loader(graph), None
        except Exception as exc:  # unreadable images are data: counted and reported, graph kept
            return None, f"{exc.__class__.__name__}: {exc}"

    def _count_tokens(self, texts: List[str]) -> List[int]:
        if self.clip_models:
            return self.clip_models[0].count_tokens(texts)
        if self._fallback_counter is None:
            from gbc.export.tokens import clip_token_counter

            self._fallback_counter = clip_token_counter()[0]
        return [self._fallback_counter(t) for t in texts]

    def _run(self, batch: _Batch, summary: ScoreSummary) -> List[ScoredGraph]:
        """Model side of a batch, then the scores written into the graphs."""
        clip_scores: Dict[str, Tuple[Dict[int, int], np.ndarray, Dict[int, int], np.ndarray, List[bool]]] = {}
        for model in self.clip_models:
            if model.name not in batch.clip_inputs:
                continue
            regions, texts, image_inputs, text_inputs = batch.clip_inputs[model.name]
            image_features = model.encode_images(image_inputs)
            text_features = model.encode_texts(text_inputs)
            summary.regions += len(regions)
            clip_scores[model.name] = ({r: i for i, r in enumerate(regions)}, image_features,
                                       {t: i for i, t in enumerate(texts)}, text_features, text_inputs.truncated)
        toxicity: Dict[int, Dict[str, float]] = {}
        if batch.toxicity_inputs is not None:
            texts, inputs = batch.toxicity_inputs
            values = self.toxicity.score(inputs)
            labels = self.toxicity.labels
            for row, ti in zip(values, texts):
                toxicity[ti] = {label: float(v) for label, v in zip(labels, row)}

        results: List[ScoredGraph] = []
        for entry in batch.entries:
            if entry.status == "already scored":
                results.append(ScoredGraph(entry.key, entry.graph, entry.status, changed=False))
                continue
            scored_captions = 0
            for vi, di, region, ti in entry.captions:
                desc = entry.graph.vertices[vi].descs[di]
                wrote = False
                if region is not None:
                    for name in entry.needs.clip:
                        region_row, image_features, text_row, text_features, truncated = clip_scores[name]
                        value = float(np.dot(image_features[region_row[region]], text_features[text_row[ti]]))
                        if not math.isfinite(value):
                            continue
                        _set_clip_score(desc, name, value, truncated[text_row[ti]])
                        summary.clip_scores += 1
                        summary.truncated += truncated[text_row[ti]]
                        wrote = True
                if entry.needs.toxicity and ti in toxicity:
                    desc.toxicity_scores = dict(toxicity[ti])
                    wrote = True
                if entry.needs.statistics and ti in batch.token_counts and (self.rescore or _missing_statistics(desc)):
                    desc.statistics = CaptionStatistics(n_words=len(desc.text.split()), n_tokens=batch.token_counts[ti])
                    wrote = True
                scored_captions += wrote
            summary.captions += scored_captions
            results.append(ScoredGraph(entry.key, entry.graph, entry.status, changed=scored_captions > 0,
                                       captions=scored_captions, error=entry.error))
        return results


def _missing_statistics(desc: Description) -> bool:
    return desc.statistics is None or desc.statistics.n_words is None or desc.statistics.n_tokens is None


def _set_clip_score(desc: Description, name: str, value: float, truncated: bool) -> None:
    old = desc.clip_scores
    scores = dict(old.scores) if old is not None and old.scores else {}
    scores[name] = value
    desc.clip_scores = ClipScores(scores=scores, truncation=bool(truncated or (old is not None and old.truncation)))


def score_graphs(graphs: Iterable[GraphItem], scorer: CaptionScorer) -> Iterator[GbcGraph]:
    """Score every caption of ``graphs`` with ``scorer``; yields the graphs (changed in place).

    >>> scorer = CaptionScorer.from_specs(clip=["clip=transformers:openai/clip-vit-base-patch32"],
    ...                                   images_root="images/")  # doctest: +SKIP
    >>> scored = list(score_graphs(gbc.read_graphs("graphs.jsonl"), scorer))  # doctest: +SKIP
    """
    for result in scorer.score(graphs):
        yield result.graph
