#!/bin/sh
# The three reference runs, one after the other: 200 epochs each of the multistep schedule
# and of warm restarts with T_0 = 50 and T_0 = 200. Then `python plot.py` draws them together.
#
#   sh run.sh            the reference runs (hours on a GPU), outputs in outputs/
#   sh run.sh --quick    the same three schedules scaled down to 20 epochs on a subset,
#                        then the combined figure, all in outputs/quick/ (minutes on a CPU)
#
# Every run is started with --resume: rerunning this script after an interruption continues
# each run from its last checkpoint and skips the runs that finished.
# Any further arguments are passed to every train.py call (e.g. --seed 1, --data-dir DIR).
# PYTHON names the interpreter (default: python).
set -eu
here=$(dirname "$0")
py=${PYTHON:-python}

if [ "${1:-}" = "--quick" ]; then
    shift
    # Every epoch count x 20/200: milestones 60 120 160 -> 6 12 16, T_0 50 -> 5, T_0 200 -> 20.
    out=outputs/quick
    quick="-e 20 --train-subset 512 --val-subset 512 --output-dir $out --resume"
    $py "$here/train.py" $quick --milestones 6 12 16 "$@"
    $py "$here/train.py" $quick --warm-restart -t0 5 "$@"
    $py "$here/train.py" $quick --warm-restart -t0 20 "$@"
    $py "$here/plot.py" --output-dir $out --t-zeros 5 20
else
    $py "$here/train.py" -e 200 --resume "$@"
    $py "$here/train.py" -e 200 --warm-restart -t0 50 --resume "$@"
    $py "$here/train.py" -e 200 --warm-restart -t0 200 --resume "$@"
fi
