"""Cache-assisted multi-source tiled delivery: tile partitioning, cache planning and saliency."""
