"""Benchmarks of delayconv against its oracle, inferno and dense convolutions.

Run ``python -m benchmarks --help`` from the repository for the options;
``python -m benchmarks --quick`` is a smoke run of under a minute. Each
(case, implementation) pair runs in its own process, so that its peak memory is
its own; the parent process only plans, collects and reports.
"""
