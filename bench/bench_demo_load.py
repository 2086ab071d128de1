"""Benchmark: wall time of ``load_pair("demo")`` (target: under 2 s on CPU). Prints, does not assert."""

from __future__ import annotations

import time

import torch


def main() -> None:
    """Load each shipped demo pair a few times and print the best and median wall times."""
    import boomerang as bm
    from boomerang.zoo import DEMO_STUDENTS

    torch.set_num_threads(2)
    bm.load_pair("demo")  # warm the import and file caches once
    for student in DEMO_STUDENTS:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            bm.load_pair("demo", student=student)
            times.append(time.perf_counter() - t0)
        times.sort()
        print(f"load_pair('demo', student={student!r}): best {times[0]:.3f} s, median {times[2]:.3f} s")


if __name__ == "__main__":
    main()
