"""``retcodec run``: configuration, the stage cache and the stages."""
