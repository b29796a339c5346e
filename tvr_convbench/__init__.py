"""tvr-convbench: a convergence benchmarking harness for text-video retrieval.

Installed, everything lives under this one namespace, so the project never claims a top-level name another
distribution owns (Hugging Face ``datasets``, PyPI ``bench``). In the repository the packages keep their own
top-level folders, mapped here by ``pyproject.toml``:

    tvr_convbench.core      core/       registry, errors, atomic files, retrieval metrics, run-log schema
    tvr_convbench.methods   methods/    the method contract and one file per method
    tvr_convbench.datasets  datasets/   the synthetic DiDeMo proxy and real DiDeMo
    tvr_convbench.bench     bench/      the harness: CLI, configs, trainer, sweeps, analysis, benchmark

Command line: ``tvr-convbench ...`` or ``python -m tvr_convbench ...`` (see ``tvr_convbench.bench.cli``).
"""

__version__ = "0.2.0"
