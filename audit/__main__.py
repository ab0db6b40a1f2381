"""``python -m audit`` (and ``torchrun -m audit``) run the command line."""

from audit.cli import main

if __name__ == "__main__":
    main()
