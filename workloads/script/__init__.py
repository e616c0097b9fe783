"""Any training script as a workload: its process, its output and the metrics read from it.
A grid's `command:` section (orchestrator/plan/script.py) says which script and how to call it."""
