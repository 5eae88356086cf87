"""retcodec.engine."""
