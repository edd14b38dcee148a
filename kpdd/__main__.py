"""`python -m kpdd` runs the CLI (the `if __name__` guard matters: vLLM spawns processes)."""

from kpdd.cli import console

if __name__ == "__main__":
    console()
