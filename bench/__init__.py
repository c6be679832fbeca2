"""Benchmarks: ``bench.load`` (burst of concurrent streams), ``bench.soak``
(steady load over minutes, memory trend) and ``bench.overhead`` (the app's
own cost per event, in-process). See ``bench/README.md``."""
