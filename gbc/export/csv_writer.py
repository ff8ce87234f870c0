"""The open_clip CSV writer: ``filepath<TAB>title``, one caption per row.

``filepath`` is the source image when a sample is the whole image unchanged; crops and
resized images are written as JPEG files into ``<OUT stem>_images/`` beside the CSV.
Text-only rows keep the recorded path or URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from gbc.export.captions import CaptionRow
from gbc.export.images import EncodedImage
from gbc.export.options import ExportOptions
from gbc.export.output import csv_images_dir
from gbc.export.writer_base import ExportedGraph
from gbc.store.keys import is_text


def _csv_plain(field: str) -> bool:
    """True when the csv writer (tab, minimal quoting) writes ``field`` unchanged."""
    return not ("\t" in field or '"' in field or "\n" in field or "\r" in field or "\0" in field)


def _csv_field(field: str) -> str:
    """``field`` as the csv module writes it (tab, minimal quoting), except that a lone CR is
    quoted too: the module quotes only the characters of its line terminator ("\n"), and a
    bare CR left unquoted splits the row in two for every CSV reader."""
    if "\t" in field or '"' in field or "\n" in field or "\r" in field:
        return '"' + field.replace('"', '""') + '"'
    return field


class CsvWriter:
    """open_clip CSV: ``filepath<TAB>title``, one caption per row."""

    def __init__(self, out: Path, options: ExportOptions, images_dir_as_read: Optional[Path] = None):
        """``images_dir_as_read``: where the images folder will be when the CSV is read (the
        export writes into a staging folder first); the CSV names images there."""
        self.out = out
        self.options = options
        out.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(out, "w", newline="", encoding="utf-8")
        self._fh.write("filepath\ttitle\n")
        self.images_dir = csv_images_dir(out)
        final = images_dir_as_read if images_dir_as_read is not None else self.images_dir
        self._images_dir_as_read = final.parent.resolve() / final.name
        self._n_images = 0
        self.files = [str(out)]

    def _image_file(self, g: ExportedGraph, row: CaptionRow, image: EncodedImage, cache: Dict) -> str:
        # The source file is referenced as is unless the sample is a crop or was re-encoded,
        # or its path is not valid UTF-8 (a CSV line cannot hold it): then it is copied.
        if image.copied and g.source is not None:
            source = str(g.source.resolve())
            if is_text(source):
                return source
        cache_key = (id(g), row.bbox)
        if cache_key not in cache:
            self.images_dir.mkdir(parents=True, exist_ok=True)
            name = f"{self._n_images:09d}.jpg"
            (self.images_dir / name).write_bytes(image.data)
            self._n_images += 1
            cache[cache_key] = str(self._images_dir_as_read / name)
        return cache[cache_key]

    def write_graph(self, g: ExportedGraph, rows: List[CaptionRow], images: List[Optional[EncodedImage]]) -> None:
        if images and images[0] is None:
            # Text-only (a graph's rows are all text-only or all with images): one path for all.
            path = g.recorded_path()
            texts = [row.text for row in rows]
            if _csv_plain(path) and all(map(_csv_plain, texts)):
                # No field needs quoting, so the csv module would write exactly these lines;
                # one write per graph instead of its per-character scan per field.
                self._fh.write("".join([f"{path}\t{text}\n" for text in texts]))
            else:
                path = _csv_field(path)
                self._fh.write("".join([f"{path}\t{_csv_field(text)}\n" for text in texts]))
            return
        cache: Dict = {}
        self._fh.write("".join([
            f"{_csv_field(g.recorded_path() if image is None else self._image_file(g, row, image, cache))}\t{_csv_field(row.text)}\n"
            for row, image in zip(rows, images)
        ]))

    def close(self) -> None:
        self._fh.close()
        if self._n_images:
            self.files.append(str(self.images_dir))
