"""Decoding many files at once with a progress bar."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

BAR_DELAY = 1.0  # seconds of work before the bar is drawn


def progress_map(fn, items: list, workers: int, desc: str) -> list:
    """[fn(x) for x in items] on a thread pool with a progress bar, shown once the work has taken a second
    (a survey of a dozen files prints none); the first error (Ctrl-C included) closes the bar, so that the
    message is printed below it, and cancels the rest."""
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(fn, x) for x in items]
        try:
            with tqdm(total=len(futures), desc=desc, delay=BAR_DELAY) as bar:
                results = []
                for f in futures:
                    results.append(f.result())
                    bar.update()
                return results
        except BaseException:
            for f in futures:
                f.cancel()
            raise
