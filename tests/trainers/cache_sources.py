"""A cache source for the cache's tests, torch-free so that a subprocess building it starts in a fraction of a second."""

import time

from PIL import Image

from trainers.cache import Source


def slow_source(count: int, delay: float) -> Source:
    """`count` grey images whose value is their index; each takes `delay` seconds to 'decode'."""

    def open_image(i: int) -> Image.Image:
        time.sleep(delay)
        return Image.new("RGB", (8, 8), (i, i, i))

    return Source("slow", {"count": count}, lambda: ({s: (list(range(count)), [0] * count) for s in ("train", "val")}, ["a"]), open_image)
