"""The layer-freezing study: :mod:`.runner` (datasets × models × strategies, each a ``python -m yolofreeze.train``
run, skip finished / resume killed / GPU pool, the dry run), :mod:`.report` (``study.csv``, ``study.md``, plots,
failure diagnostics), :mod:`.demo` (the offline miniature). ``python -m yolofreeze.study`` is :mod:`.__main__`."""
