"""The neutral core every package of tvr-convbench builds on, and that imports none of them.

``registry`` (decorator registries), ``errors`` (one-line user errors), ``files`` (atomic writes, output checks),
``metrics`` (retrieval metrics of a similarity matrix) and ``schema`` (the run log's columns, statuses, metric
names and file paths). Imports run one way: ``bench`` -> ``methods``, ``datasets`` -> ``core``.
"""
