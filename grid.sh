#!/bin/sh
# The paper's grid: train it, print its commands, submit it to SLURM, show its status. Everything is
# grid.py's (python grid.py --help: the modes, settings and flags); this script hands its arguments over,
# with the interpreter PYTHON names (default: python).
exec ${PYTHON:-python} "$(dirname "$0")/grid.py" "$@"
