"""retcodec.io."""
