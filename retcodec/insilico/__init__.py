"""retcodec.insilico.retina."""
