"""Out-of-memory errors as a GPU raises them, for the batch-halving tests on CPU.

``fail_above(limit, batch_of)`` wraps a model call (``generate``, ``forward``, a feature
method) so that a call whose batch is larger than ``limit`` raises
``torch.cuda.OutOfMemoryError`` before running, as a GPU does when a batch does not fit. The
backends under test are the production classes: the error reaches them from their model.
"""

from typing import Any, Callable, List


def fail_above(fn: Callable[..., Any], limit: int, batch_of: Callable[[dict], int]) -> Callable[..., Any]:
    """``fn`` raising CUDA out-of-memory for batches over ``limit``; ``.sizes`` lists every batch tried."""
    import torch

    sizes: List[int] = []

    def call(*args, **kwargs):
        size = batch_of(kwargs)
        sizes.append(size)
        if size > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory for a batch of {size} (limit {limit})")
        return fn(*args, **kwargs)

    call.sizes = sizes
    return call


def rows(name: str) -> Callable[[dict], int]:
    """The batch size of a call: the first dimension of its keyword tensor ``name``."""
    return lambda kwargs: int(kwargs[name].shape[0])
