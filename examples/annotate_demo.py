"""Annotate the demo images with the rule-based ``scripted`` backends and print one graph.

No model is needed: ``scripted`` answers by rule, in the layouts real models are prompted
for, so this runs anywhere in a second. Swap the specs for real backends
(``transformers:<model>``, ``grounding-dino:<model>``) to caption for real.

    python examples/annotate_demo.py [OUT.lmdb]

The same with the command line::

    gbc annotate examples/images -o demo.lmdb --mllm scripted --detector scripted
    gbc show demo.lmdb house_and_trees.png
"""

import sys
import tempfile
from pathlib import Path

import gbc
from gbc.annotators.backends.registry import create_detector, create_mllm
from gbc.annotators.config import AnnotateConfig
from gbc.annotators.engine import RecursiveAnnotator
from gbc.annotators.images import discover_images

IMAGES = Path(__file__).resolve().parent / "images"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "demo.lmdb"
    config = AnnotateConfig().with_overrides({"limits.max_depth": 3, "seed": 1})
    annotator = RecursiveAnnotator(config, create_mllm("scripted"), create_detector("scripted"))
    with gbc.open_store(out, readonly=False) as store:
        summary = annotator.run(discover_images([IMAGES]), store)
    print(summary)
    with gbc.open_store(out) as store:
        graph = store["house_and_trees.png"]
    print(f"\n{graph.img_path} ({graph.img_size[0]}x{graph.img_size[1]}): {graph.short_caption}")
    depths = graph.depths()
    for vid in graph.bfs_order():
        v = graph.vertex(vid)
        children = ", ".join(f"{text!r}->{child.vertex_id or '<image>'}" for child, text in graph.children(vid))
        print(f"{'  ' * depths.get(vid, 0)}[{v.label}] {vid or '<image>'}: {len(v.descs)} captions"
              + (f"; {children}" if children else ""))
    print(f"\nstore: {out}")


if __name__ == "__main__":
    main()
