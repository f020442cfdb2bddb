"""``python -m diffsep`` runs the command line."""

from diffsep.cli import main

if __name__ == "__main__":
    main()
