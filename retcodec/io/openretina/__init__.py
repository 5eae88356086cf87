"""openretina models and the published dataset as it is distributed (``retcodec[openretina]``)."""
from retcodec.io.openretina.tree import TREE_FOLDER, published_tree, session_file, sessions, tree_root

__all__ = ["TREE_FOLDER", "published_tree", "session_file", "sessions", "tree_root"]
