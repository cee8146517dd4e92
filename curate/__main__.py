"""`python -m curate`: the curate command (flows/cli.py), the same as the console script."""

from flows.cli import main

if __name__ == "__main__":  # vLLM's engine starts in a spawned process, which imports this module again
    main()
