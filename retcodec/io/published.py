"""Tables of the published Baccus-lab code (``datas.CELLS``, ``datas.CENTERS``).

See ``docs/formats.md`` (cell and centre tables).
"""
from __future__ import annotations

import numpy as np

__all__ = ["PUBLISHED_CELLS", "PUBLISHED_CENTERS"]

#: ``datas.CELLS`` of the published code (docs/formats.md): the recorded cells each dataset's models predict
PUBLISHED_CELLS: dict[str, list[int]] = {
    "15-10-07": [0, 1, 2, 3, 4],
    "15-11-21a": [6, 10, 12, 13],
    "15-11-21b": [0, 1, 3, 5, 8, 9, 13, 14, 16, 17, 18, 20, 21, 22, 23, 24, 25],
    "16-01-07": [0, 2, 7, 10, 11, 12, 31],
    "16-01-08": [0, 3, 7, 9, 11],
    "16-05-31": [2, 3, 4, 14, 16, 18, 20, 25, 27],
}
#: ``datas.CENTERS`` (docs/formats.md): (row, col) of each cell of ``PUBLISHED_CELLS``, 50x50 stimulus pixels
PUBLISHED_CENTERS: dict[str, np.ndarray] = {
    "15-10-07": np.array([[21, 18], [24, 20], [22, 18], [27, 18], [31, 20]]),
    "15-11-21a": np.array([[37, 3], [39, 6], [20, 15], [41, 2]]),
    "15-11-21b": np.array([[16, 13], [20, 12], [19, 7], [19, 3], [21, 7], [22, 6], [21, 7],
                           [25, 3], [23, 6], [26, 4], [24, 6], [26, 7], [27, 9], [26, 9],
                           [27, 11], [26, 13], [24, 10]]),
}
for _table in PUBLISHED_CENTERS.values():
    _table.setflags(write=False)
