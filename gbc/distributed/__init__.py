"""Annotating beyond one machine.

- ``gbc.distributed.sharding``: stable ``--shard i/N`` partitions of image keys for batch
  schedulers (Slurm array jobs and the like).
- ``gbc.distributed.merge``: merging store shards into one store, and a read-only view over
  several shards.
- ``gbc.distributed.ray_runner``: the annotator on a Ray cluster (one actor per worker, each
  writing its own shard).
- ``gbc.distributed.worker``: the annotator actor, its shard and what happens when its
  process dies.

Ray is imported only by ``ray_runner`` and only when a run starts.
"""
