"""`python -m launcher`: the same as the `devin-fleet` console script."""

from launcher.cli import main

if __name__ == "__main__":
    main()
