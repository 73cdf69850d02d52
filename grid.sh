#!/bin/sh
# The paper's grid (its Table 1, but for the eta_0 = 0.1 row: add default@0.1 to SCHEDULES for it):
# the multistep default and warm restarts with
# T_0/T_mult = 50/1, 100/1, 200/1, 1/2 and 10/2, for one network and data set, with several
# seeds, trained with the SGDR authors' own recipe (train.py --recipe paper). Every run is
# started with --resume: rerun this script after an interruption and it continues where it
# stopped. Then `python report.py` compares the results with the paper.
#
#   sh grid.sh [train.py flags...]           train the runs, one after the other
#   sh grid.sh --print [train.py flags...]   print their train.py commands, one per line, and
#                                            train nothing (for GNU parallel or another launcher)
#   sh grid.sh --submit [--dry-run] [--sbatch "OPTIONS"] [train.py flags...]
#                                            submit them to SLURM as one job array, a run per
#                                            task, requeued after preemption or near its time
#                                            limit (--dry-run: print the batch script only)
#   sh grid.sh --status [train.py flags...]  the state of every run, read from its folder
# (python grid.py does --submit and --status; docs/cluster.md has the details.)
#
# Settings, by environment variable (defaults: the paper's):
#   MODEL=wrn-28-10  DATASET=cifar10  RECIPE=paper  SEEDS="1 2 3 4 5"  EPOCHS=200  GRID_DIR=outputs/grid
#   SCHEDULES="default 50:1 100:1 200:1 1:2 10:2"   (default: the multistep schedule; T_0:T_mult.
#       After either, @LR: another initial lr (default@0.1 is the paper's eta_0 = 0.1 row); after
#       T_0:T_mult, /wW /sS /dD /kK: a warmup of W epochs (from lr S), cycle decay D, K cycles;
#       each at most once, in any order; such runs go to seed<k>/<what they add>/, e.g. 10:2/d0.5
#       to seed1/d0.5/, 10:2/d0.5/w5 and 10:2/w5/d0.5 both to seed1/w5_d0.5/)
#   COMPARE=1   (adds two comparison schedules: one cosine cycle after a 5-epoch warmup, no
#                restart, $((EPOCHS - 5)):1/w5; and SGDR with cycle decay 0.5, 10:2/d0.5)
#   TABLE2_SEEDS=""   (seeds T_0 = 10, T_mult = 2 is also trained with, for Table 2's ensembles of 16
#                      runs: TABLE2_SEEDS="$(seq 1 16)"; off by default, 11 more runs)
#   SIGNAL_SECONDS=300   (--submit: how long before its time limit a task stops and requeues itself)
# --model, --dataset, --recipe and -e/--epochs among the flags work too. Runs go to
# $GRID_DIR/$DATASET-$MODEL-$RECIPE/seed$SEED/. PYTHON names the interpreter.
set -eu
set -f  # SEEDS and SCHEDULES are words, never file-name patterns
here=$(dirname "$0")
py=${PYTHON:-python}
model=${MODEL:-wrn-28-10}
dataset=${DATASET:-cifar10}
recipe=${RECIPE:-paper}
epochs=${EPOCHS:-200}
grid=${GRID_DIR:-outputs/grid}
schedules=${SCHEDULES-default 50:1 100:1 200:1 1:2 10:2}
seeds=${SEEDS-1 2 3 4 5}
table2_seeds=${TABLE2_SEEDS-}
mode=train
dry_run=""
sbatch=""  # sbatch options for grid.py submit, shell-quoted words (it splits them)
case "${1:-}" in
    --print) mode=print; shift ;;
    --status) mode=status; shift ;;
    --submit)
        mode=submit
        shift
        while [ $# -gt 0 ]; do
            case "$1" in
                --dry-run) dry_run=--dry-run; shift ;;
                --sbatch)
                    if [ $# -lt 2 ]; then
                        echo "grid.sh: --sbatch needs the sbatch options, as one quoted word." >&2
                        exit 2
                    fi
                    sbatch="${sbatch:+$sbatch }$2"
                    shift 2 ;;
                *) break ;;
            esac
        done ;;
esac
if [ -z "$(echo $seeds)" ] || [ -z "$(echo $schedules)" ]; then
    echo "grid.sh: SEEDS and SCHEDULES must each name at least one (e.g. SEEDS=\"1 2 3\")." >&2
    exit 2
fi
bad=0
for seed in $seeds $table2_seeds; do
    case "$seed" in
        0 | [1-9] | [1-9]*[0-9]) case "$seed" in *[!0-9]*) bad=1 ;; esac ;;
        *) bad=1 ;;
    esac
    if [ "$bad" = 1 ]; then
        echo "grid.sh: SEEDS or TABLE2_SEEDS: $seed is not a whole number without leading zeros (e.g. SEEDS=\"1 2 3\")." >&2
        exit 2
    fi
done
# The seeds in order: SEEDS, then those of TABLE2_SEEDS not among them.
all_seeds=$seeds
for seed in $table2_seeds; do
    case " $(echo $all_seeds) " in *" $seed "*) ;; *) all_seeds="$all_seeds $seed" ;; esac
done

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
        --print|--status|--submit)
            echo "grid.sh: $arg must come first (sh grid.sh $arg [train.py flags...])." >&2
            exit 2 ;;
    esac
    previous=$arg
done
root=$grid/$dataset-$model-$recipe
case "$epochs" in
    "" | *[!0-9]* | 0*)
        echo "grid.sh: EPOCHS (or -e) is $epochs, not a whole number of epochs (e.g. EPOCHS=200)." >&2
        exit 2 ;;
esac
case "${COMPARE:-}" in
    "") ;;
    1)
        if [ "$epochs" -le 5 ]; then
            echo "grid.sh: COMPARE=1 adds a 5-epoch warmup before one cycle, which needs more than 5 epochs." >&2
            exit 2
        fi
        schedules="$schedules $((epochs - 5)):1/w5 10:2/d0.5" ;;  # each once, if SCHEDULES has it already: below
    *)
        echo "grid.sh: COMPARE is $COMPARE; COMPARE=1 adds the comparison schedules, unset it for none." >&2
        exit 2 ;;
esac

among() {  # among WORD LIST: whether WORD is one of LIST's words
    case " $(echo $2) " in *" $1 "*) return 0 ;; *) return 1 ;; esac
}

parse_word() {  # parse_word WORD: a SCHEDULES word into $shape, $lr, $options (train.py flags) and $tag
    shape=${1%%[@/]*}
    rest=${1#"$shape"}
    lr=""
    case "$rest" in
        @*) lr=${rest#@}; lr=${lr%%/*}; rest=${rest#@"$lr"} ;;
    esac
    case "$shape" in
        default) [ -z "$rest" ] || return 1 ;;
        *[!0-9:]* | :* | *: | *:*:* | [!0-9]*) return 1 ;;
        *:*) ;;
        *) return 1 ;;
    esac
    case "$lr" in
        *[!0-9.]* | .* | *.*.* | *.) return 1 ;;
    esac
    [ -n "$lr" ] || [ "${1#*@}" = "$1" ] || return 1  # an @ with no rate after it
    warm="" start="" decay="" limit=""
    while [ -n "$rest" ]; do
        rest=${rest#/}
        option=${rest%%/*}
        rest=${rest#"$option"}
        value=${option#?}
        case "$value" in
            "" | *[!0-9.]* | .* | *.*.* | *.) return 1 ;;
        esac
        case "$option" in
            w*.* | k*.* | k0*) return 1 ;;  # whole numbers of epochs and cycles, at least one cycle
            w*) [ -z "$warm" ] && warm=$value ;;  # each at most once
            s*) [ -z "$start" ] && start=$value ;;
            d*) [ -z "$decay" ] && decay=$value ;;
            k*) [ -z "$limit" ] && limit=$value ;;
            *) return 1 ;;
        esac || return 1
    done
    # The options, the folder's name and the word in one order, whatever the word's: 10:2/d0.5/w5 is
    # 10:2/w5/d0.5, one run in one folder.
    options="${warm:+ --warmup-epochs $warm}${start:+ --warmup-start-lr $start}"
    options="$options${decay:+ --cycle-decay $decay}${limit:+ --cycle-limit $limit}"
    tag=${lr:+lr$lr} word=$shape${lr:+@$lr}
    for option in ${warm:+w$warm} ${start:+s$start} ${decay:+d$decay} ${limit:+k$limit}; do
        tag="${tag:+${tag}_}$option"
        word="$word/$option"
    done
}

words=""  # SCHEDULES in the one order of parse_word, each once
for schedule in $schedules; do
    if ! parse_word "$schedule"; then
        echo "grid.sh: SCHEDULES: $schedule is neither default nor T_0:T_mult (e.g. 10:2), with @LR for another" \
            "initial lr (default@0.1) and, after T_0:T_mult, /wW /sS /dD /kK, each at most once (10:2/w5/d0.5)." >&2
        exit 2
    fi
    among "$word" "$words" || words="${words:+$words }$word"
done
schedules=$words

quote() {  # one argument as a shell word
    case "$1" in
        "" | *[!A-Za-z0-9_./:=,+@%-]*) printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")" ;;
        *) printf '%s' "$1" ;;
    esac
}

train() {  # train ARGS...: run train.py with ARGS, or print the command
    if [ $mode != train ]; then
        line=""
        for word in $py "$here/train.py" "$@"; do  # PYTHON split into words, as when it runs
            line="$line${line:+ }$(quote "$word")"
        done
        echo "$line"
    else
        $py "$here/train.py" "$@"
    fi
}

schedule_run() {  # schedule_run WORD SEED USER_FLAGS...: the run of one SCHEDULES word for one seed
    parse_word "$1"
    seed=$2
    shift 2
    set -- -e "$epochs" --model "$model" --dataset "$dataset" --recipe "$recipe" --seed "$seed" \
        --output-dir "$root/seed$seed${tag:+/$tag}" --resume "$@"
    if [ -n "$lr" ]; then
        set -- "$@" --lr "$lr"
    fi
    if [ "$shape" = default ]; then
        train "$@"
    else
        train "$@" --warm-restart -t0 "${shape%:*}" -tm "${shape#*:}" $options
    fi
}

runs() {  # every run of the grid, seed by seed, schedule by schedule
    for seed in $all_seeds; do
        if among "$seed" "$seeds"; then
            for schedule in $schedules; do
                schedule_run "$schedule" "$seed" "$@"
            done
        fi
        if among "$seed" "$table2_seeds" && ! { among "$seed" "$seeds" && among 10:2 "$schedules"; }; then
            schedule_run 10:2 "$seed" "$@"
        fi
    done
}

plan() {  # add the grid's commands to $root/grid.txt (report.py lists the planned runs not finished)
    mkdir -p "$root"
    was=$mode
    mode=print
    { cat "$root/grid.txt" 2>/dev/null || true; runs "$@"; } | awk '!seen[$0]++' > "$root/.grid.txt.$$"
    mode=$was
    mv "$root/.grid.txt.$$" "$root/grid.txt"
}

case $mode in
    print) runs "$@" ;;
    status) runs "$@" | $py "$here/grid.py" status ;;
    submit)  # grid.py adds the commands to grid.txt once sbatch has taken the array
        runs "$@" | $py "$here/grid.py" submit $dry_run --sbatch="$sbatch" \
            ${SIGNAL_SECONDS:+--signal-seconds "$SIGNAL_SECONDS"} ;;
    train)
        # Every command as train.py parses it, before any run starts (a word train.py refuses would otherwise
        # stop the grid only when its turn comes, and stay in grid.txt).
        mode=print
        runs "$@" | $py "$here/grid.py" status > /dev/null || exit 2
        mode=train
        plan "$@"
        runs "$@"
        echo "Done. Compare with the paper: python report.py --runs $grid" ;;
esac
