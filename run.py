"""Command line entry point: `python run.py --time-limit SECONDS [--data-dir DIR] ...`.

Only parses the command line and calls one function; see automl_pipeline/cli.py.
"""
import sys

from automl_pipeline.cli import exit_at_once, main

if __name__ == "__main__":
    exit_at_once(main(sys.argv[1:]))
