"""bigtrain's benchmark suite: every figure is a ratio against a baseline measured in the same run.

`python -m benchmarks [BENCH ...] [--quick] [--out FILE]`; see benchmarks/__main__.py and README's performance
section. Benchmarks live outside the package and outside the test suite: timings on shared machines are noisy, so
they report medians of alternating runs and never assert on time.
"""
