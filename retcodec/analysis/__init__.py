"""retcodec.analysis."""
