"""Keep pytest out of the benchmarks: they are a script (run.py), not tests.

pytest's testpaths is ``tests``; without this, a future ``bench_*.py`` or ``test_*.py`` here
could be collected (and run.py's heavy imports executed). This conftest is still loaded.
"""

collect_ignore_glob = ["*.py"]
