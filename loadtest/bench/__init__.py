"""Benchmarks of the instrument itself, and the fake server its tests and benchmarks use."""
