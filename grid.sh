#!/bin/sh
# The paper's grid (its Table 1): the multistep default and warm restarts with
# T_0/T_mult = 50/1, 100/1, 200/1, 1/2 and 10/2, for one network and data set, with several
# seeds. Every run is started with --resume: rerun this script after an interruption and it
# continues where it stopped. Then `python report.py` compares the results with the paper.
#
#   sh grid.sh [train.py flags...]
#
# Settings, by environment variable (defaults: the paper's):
#   MODEL=wrn-28-10  DATASET=cifar10  SEEDS="1 2 3 4 5"  EPOCHS=200  GRID_DIR=outputs/grid
# Runs go to $GRID_DIR/$DATASET-$MODEL/seed$SEED/. PYTHON names the interpreter.
set -eu
here=$(dirname "$0")
py=${PYTHON:-python}
model=${MODEL:-wrn-28-10}
dataset=${DATASET:-cifar10}
epochs=${EPOCHS:-200}
root=${GRID_DIR:-outputs/grid}/$dataset-$model

for seed in ${SEEDS:-1 2 3 4 5}; do
    common="-e $epochs --model $model --dataset $dataset --seed $seed --output-dir $root/seed$seed --resume"
    $py "$here/train.py" $common "$@"
    for schedule in 50:1 100:1 200:1 1:2 10:2; do
        $py "$here/train.py" $common --warm-restart -t0 "${schedule%:*}" -tm "${schedule#*:}" "$@"
    done
done
echo "Done. Compare with the paper: python report.py --runs ${GRID_DIR:-outputs/grid}"
