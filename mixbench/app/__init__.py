"""The application layer: what the console scripts (``mixbench-train``, ...) and tools/*.py
run. It parses Hydra configs, starts processes and hands the work to the protocols and
tools below it; ``mixbench.engine`` stays low-level and imports none of this."""
