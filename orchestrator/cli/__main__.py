"""`python -m orchestrator.cli`, as the `ablate` console script."""
from orchestrator.cli import main

main()
