"""Where images come from: folders, WebDataset tar shards and URL lists, read as a stream.

Typical use (what ``gbc annotate`` does)::

    from gbc.inputs import InputStream, StoreResume, resolve

    units = resolve(["shards/{00000..00099}.tar", "urls.parquet", "photos/"])
    stream = InputStream(units, skip=StoreResume(store))
    for source in stream:          # ImageSource: key, bytes or path, url, caption, origin
        ...

Modules: ``detect`` (what an argument is, brace ranges), ``folders``, ``tars``, ``urllists``,
``download`` (httpx, retries, limits), ``stream`` (the lazy pipeline, ``--shard``),
``resume`` (skipping what a store holds).
"""

from gbc.inputs.detect import InputUnit, resolve
from gbc.inputs.download import DownloadOptions, Downloader
from gbc.inputs.items import ImageSource, InputError
from gbc.inputs.resume import StoreResume
from gbc.inputs.stream import InputStream, StreamCounts
from gbc.inputs.urllists import Columns

__all__ = ["Columns", "DownloadOptions", "Downloader", "ImageSource", "InputError", "InputStream", "InputUnit",
           "StoreResume", "StreamCounts", "resolve"]
