"""Benchmarks: ``bench.run`` (throughput against in-process and naive-handler
baselines, concurrency, start-up; ``make bench``), ``bench.soak`` (steady
load over minutes, memory trend). See ``bench/README.md``."""
