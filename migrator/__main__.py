"""`python -m migrator`: the `migrate` console script, `python -m migrator run ...` included."""

from migrator.console import entry

if __name__ == "__main__":
    entry()
