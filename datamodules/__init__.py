"""Training data: WISA-80K, the synthetic default, relabeling, the latent cache, ``pila prepare``.

Modules, in data-flow order:

- :mod:`.rejections` why a record or video was skipped, ``rejected.jsonl``, what to check
- :mod:`.records` WISA-80K records: parsing, filters
- :mod:`.prompt_side` WISA's prompt-side records read for generation
- :mod:`.split` the train/val split by a hash of each video name
- :mod:`.relabel` the eight-category relabeling (rules: :mod:`pila.parser.category_map`)
- :mod:`.sources` finding videos in shard zips, per-shard folders or a flat folder
- :mod:`.clips` PyAV clip sampling (frames, rate, resize and centre crop, short clips)
- :mod:`.flow_targets` stage A's Farneback pseudo-flow targets on the latent grid
- :mod:`.decoded` decode + flow in workers, VAE + text encoding on batches
- :mod:`.cache` the sharded safetensors cache and its manifest
- :mod:`.prepare_config` ``pila prepare``'s settings and command line (jsonargparse)
- :mod:`.cache_identity` what a cache is: settings, records and backbone fingerprints
- :mod:`.ranks` the processes of a multi-process run, shard ownership, completion markers
- :mod:`.shard_writer` decode, encode (at a fixed thread count) and write one rank's shards
- :mod:`.prepare` ``pila prepare``: relabel, then build or resume the cache
- :mod:`.collate` batching prompts of different lengths
- :mod:`.wisa` :class:`WISA80KDataModule`
- :mod:`.synthetic` procedural physics clips and :class:`SyntheticPhysicsDataModule`

Names are imported on first use, so importing one module does not load the others.
"""

from __future__ import annotations

from pila.lazy import lazy_exports

_EXPORTS = {
    "WISA80KDataModule": "wisa",
    "SyntheticPhysicsDataModule": "synthetic",
    "SyntheticConfig": "synthetic",
    "write_synthetic_dataset": "synthetic",
    "relabel_records": "relabel",
    "PrepareConfig": "prepare_config",
    "prepare_cache": "prepare",
    "CachedClips": "cache",
    "CacheCorruptError": "cache",
    "CacheMismatchError": "cache",
    "CacheMissingError": "cache",
    "collate_clips": "collate",
    "ClipConfig": "clips",
    "FlowConfig": "flow_targets",
    "flow_target": "flow_targets",
    "FilterConfig": "records",
    "REJECTION_REASONS": "rejections",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
