"""``python -m retcodec`` is the ``retcodec`` command."""
import sys

from retcodec.cli import main

sys.exit(main())
