"""The live system: the push side (sr-push, sr-monitor, online training, model upload) and live
delivery (ingest, HLS, the composed chain). Beside :mod:`srtools.tiled`; neither imports the other."""
