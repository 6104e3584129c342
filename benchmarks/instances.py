"""Random cache-planning instances of the design's evaluation configuration (benchmarks and tests)."""

from __future__ import annotations

import numpy as np

from srtools.tiled.cacheplan import Instance
from srtools.tiled.partition import balanced_partition


def random_instance(
    rng: np.random.Generator,
    n_segments: int = 60,
    n_edges: int = 6,
    tiles_per_segment: int = 24,
    capacity_fraction: float = 0.25,
) -> Instance:
    """Random instance of the design's evaluation configuration.

    Per segment and edge the latency is uniform in [1, 100] ms. Each segment
    has ``tiles_per_segment`` tiles with lognormal sizes (median 20 kB,
    sigma 0.8) split into ``n_edges`` balanced sets by
    :func:`~srtools.tiled.partition.balanced_partition`. DNN time is 0.5 ms
    per kB times lognormal noise (sigma 0.2), so a few ms to tens of ms;
    bicubic time is a tenth of it; tiles under 8 kB skip the DNN. Attention
    is lognormal (sigma 0.5). Capacity is ``capacity_fraction`` of all sets.

    Args:
        rng: Random generator.
        n_segments: n.
        n_edges: M.
        tiles_per_segment: J.
        capacity_fraction: C / (n M).

    Returns:
        The instance.
    """
    shape = (n_segments, tiles_per_segment)
    tile_bytes = np.round(rng.lognormal(np.log(20_000), 0.8, shape))
    dnn_ms = tile_bytes / 1000 * 0.5 * rng.lognormal(0.0, 0.2, shape)
    tile_sets = [balanced_partition(sizes.tolist(), n_edges) for sizes in tile_bytes]
    return Instance.from_tiles(
        latency_ms=rng.uniform(1.0, 100.0, (n_segments, n_edges)),
        tile_sets=tile_sets,
        dnn_ms=dnn_ms,
        bicubic_ms=dnn_ms / 10,
        tile_bytes=tile_bytes,
        dnn_threshold_bytes=8_000,
        attention=rng.lognormal(0.0, 0.5, n_segments),
        capacity=round(capacity_fraction * n_segments * n_edges),
    )
