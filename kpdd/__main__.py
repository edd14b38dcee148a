"""`python -m kpdd` runs the CLI (the `if __name__` guard matters: vLLM spawns processes)."""

from kpdd.cli import main

if __name__ == "__main__":
    main()
