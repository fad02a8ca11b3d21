"""What the benchmark scripts share: one wall-clock measurement."""
import time


def timed(fn) -> float:
    """Seconds ``fn()`` takes, by ``time.perf_counter``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
