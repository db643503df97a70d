"""Command line entry point: `python run.py --time-limit SECONDS [--data-dir DIR] ...`.

Only parses the command line and calls one function; see automl_pipeline/cli.py.
"""
import sys

from automl_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
