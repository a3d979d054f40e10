"""Run results: the results.json schema and the tables derived from it."""
from mixbench.results.io import RESULTS_NAME, read_results, write_json_atomic

__all__ = ["RESULTS_NAME", "read_results", "write_json_atomic"]
