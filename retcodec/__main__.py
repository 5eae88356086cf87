"""``python -m retcodec`` is the ``retcodec`` command."""
import sys

from .cli import main

sys.exit(main())
