"""`python -m pipelines.dashboard` (what `make dashboard` runs): see pipelines/dashboard/cli.py."""
from pipelines.dashboard.cli import main

if __name__ == "__main__":
    main()
