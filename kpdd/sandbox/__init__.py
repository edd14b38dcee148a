"""The sandbox that runs model-written programs: the executor (parent side) and its worker script."""
