#!/bin/sh
# The paper's grid (its Table 1): the multistep default and warm restarts with
# T_0/T_mult = 50/1, 100/1, 200/1, 1/2 and 10/2, for one network and data set, with several
# seeds, trained with the SGDR authors' own recipe (train.py --recipe paper). Every run is
# started with --resume: rerun this script after an interruption and it continues where it
# stopped. Then `python report.py` compares the results with the paper.
#
#   sh grid.sh [train.py flags...]           train the runs, one after the other
#   sh grid.sh --print [train.py flags...]   print their train.py commands, one per line, and
#                                            train nothing (for a job array or GNU parallel)
#
# Settings, by environment variable (defaults: the paper's):
#   MODEL=wrn-28-10  DATASET=cifar10  RECIPE=paper  SEEDS="1 2 3 4 5"  EPOCHS=200  GRID_DIR=outputs/grid
# --model, --dataset, --recipe and -e/--epochs among the flags work too. Runs go to
# $GRID_DIR/$DATASET-$MODEL-$RECIPE/seed$SEED/. PYTHON names the interpreter.
set -eu
here=$(dirname "$0")
py=${PYTHON:-python}
model=${MODEL:-wrn-28-10}
dataset=${DATASET:-cifar10}
recipe=${RECIPE:-paper}
epochs=${EPOCHS:-200}
grid=${GRID_DIR:-outputs/grid}
print=0
if [ "${1:-}" = --print ]; then
    print=1
    shift
fi

# The flags that name a run's folder must name it after what train.py is told (its last
# occurrence wins there too); the seed and the folder are the grid's own.
previous=""
for arg in "$@"; do
    case "$previous" in
        --model) model=$arg ;;
        --dataset) dataset=$arg ;;
        --recipe) recipe=$arg ;;
        -e|--epochs) epochs=$arg ;;
    esac
    case "$arg" in
        --model=*) model=${arg#*=} ;;
        --dataset=*) dataset=${arg#*=} ;;
        --recipe=*) recipe=${arg#*=} ;;
        --epochs=*) epochs=${arg#*=} ;;
        --seed|--seed=*|--output-dir|--output-dir=*)
            echo "grid.sh: ${arg%%=*} is the grid's own; set SEEDS=\"...\" or GRID_DIR=... instead." >&2
            exit 2 ;;
    esac
    previous=$arg
done
root=$grid/$dataset-$model-$recipe

quote() {  # one argument as a shell word
    case "$1" in
        "" | *[!A-Za-z0-9_./:=,+@%-]*) printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")" ;;
        *) printf '%s' "$1" ;;
    esac
}

train() {  # train ARGS...: run train.py with ARGS, or print the command
    if [ $print = 1 ]; then
        line=$(quote "$py")
        for word in "$here/train.py" "$@"; do
            line="$line $(quote "$word")"
        done
        echo "$line"
    else
        $py "$here/train.py" "$@"
    fi
}

for seed in ${SEEDS:-1 2 3 4 5}; do
    user=$#
    set -- -e "$epochs" --model "$model" --dataset "$dataset" --recipe "$recipe" --seed "$seed" \
        --output-dir "$root/seed$seed" --resume "$@"
    train "$@"
    for schedule in 50:1 100:1 200:1 1:2 10:2; do
        train "$@" --warm-restart -t0 "${schedule%:*}" -tm "${schedule#*:}"
    done
    shift $(($# - user))  # drop the grid's own words: the user's flags stay for the next seed
done
if [ $print = 0 ]; then
    echo "Done. Compare with the paper: python report.py --runs $grid"
fi
