"""retcodec.pipeline.run."""
