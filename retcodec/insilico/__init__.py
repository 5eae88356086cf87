"""In-silico retinas with known answers: :mod:`.circuit` (v2, the bundled default: six ganglion
types, silenceable interneuron types) and :mod:`.retina` (v1, kept reproducible by its seed)."""
