#!/bin/sh
# The three reference runs: 200 epochs each of the multistep schedule and of warm restarts
# with T_0 = 50 and T_0 = 200. Then `python plot.py` draws them together.
#
#   sh run.sh              the reference runs, one after the other (hours on a GPU), in outputs/
#   sh run.sh --quick      the same three schedules scaled down to 20 epochs on a subset (validated
#                          with recomputed BatchNorm statistics), then the combined figure, all in
#                          outputs/quick/ (minutes on a CPU)
#   sh run.sh --parallel   the three runs at once, one per GPU (round robin over the GPUs in
#                          CUDA_VISIBLE_DEVICES when it is set, else over those nvidia-smi lists,
#                          or GPUS=N), each with --device cuda, logging to <outputs>/logs/<run>.log;
#                          with fewer GPUs than runs, runs that share a GPU take it in turn
#
# Every run is started with --resume: rerunning this script after an interruption continues
# each run from its last checkpoint and skips the runs that finished (with --overwrite instead,
# every run starts over).
# Further arguments are passed to every train.py call (e.g. --seed 1, --data-dir DIR); an
# --output-dir among them replaces outputs/ (or outputs/quick/) everywhere, logs and figure included.
# PYTHON names the interpreter (default: python); `python train.py --help` lists the flags.
set -eu
quoted() {  # the words, each single-quoted when the shell would otherwise read it differently
    for word in "$@"; do
        case $word in
            "" | *[!A-Za-z0-9_./:=,+-]*) printf " '%s'" "$(printf '%s' "$word" | sed "s/'/'\\\\''/g")" ;;
            *) printf ' %s' "$word" ;;
        esac
    done
}
invocation="sh$(quoted "$0" "$@")"  # the command to type again after an interruption
here=$(dirname "$0")
py=${PYTHON:-python}
quick=0
parallel=0
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help)  # this script's own options: the comment at its top
            sed -n '2,/^set -eu/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
            exit 0 ;;
        --quick) quick=1; shift ;;
        --parallel) parallel=1; shift ;;
        *) break ;;
    esac
done

if [ $quick = 1 ]; then
    # Every epoch count x 20/200: milestones 60 120 160 -> 6 12 16, T_0 50 -> 5, T_0 200 -> 20.
    out=outputs/quick epochs=20 first=5 second=20 milestones="--milestones 6 12 16"
else
    out=outputs epochs=200 first=50 second=200 milestones=""
fi
# What the user's train.py flags change here: the output folder (as train.py reads it, the last
# one given wins), and --overwrite, which must replace the --resume added below. The flags that
# choose a schedule are each reference run's own: given to all three, they would make them one.
again=--resume
previous=""
for arg in "$@"; do
    case "$previous" in --output-dir) out=$arg ;; esac
    case "$arg" in
        --output-dir=*) out=${arg#--output-dir=} ;;
        --overwrite) again="" ;;
        -wr | --warm-restart | -t0* | --t-zero | --t-zero=* | -tm* | --t-mult | --t-mult=* | --milestones | \
        --milestones=* | --warmup-epochs* | --warmup-start-lr* | --cycle-decay* | --cycle-limit*)
            echo "run.sh: ${arg%%=*} chooses a schedule, and each reference run has its own; for another" \
                "schedule run train.py itself (python train.py --help)." >&2
            exit 2 ;;
    esac
    previous=$arg
done
if [ $quick = 1 ]; then
    # 2,048 images are 16 batches an epoch. BatchNorm's running statistics (momentum 0.1), which
    # validation reads, then lag the weights that the reference rate moves quickly: on real
    # CIFAR-10 the first validation losses were 10^2 to 10^4 and a restart brought spikes of 10-100
    # back, while the same networks with their statistics recomputed read 2-3 (docs/quick-mode.md).
    # --recompute-bn recomputes them from the training images before each validation (one more
    # pass over the 2,048 images); training itself is the reference's.
    set -- --train-subset 2048 --test-subset 512 --recompute-bn --output-dir "$out" "$@"
fi
if [ $parallel = 1 ]; then
    # A CUDA_VISIBLE_DEVICES set by the user or a scheduler names the GPUs this job may use. Else
    # count the "GPU k:" lines of nvidia-smi -L (MIG slices add indented lines of their own).
    if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
        devices=$(echo "$CUDA_VISIBLE_DEVICES" | tr ',' ' ')
    else
        case "${GPUS:-}" in
            *[!0-9]*) echo "run.sh --parallel: GPUS is $GPUS, not a number of GPUs (e.g. GPUS=2)." >&2; exit 2 ;;
        esac
        count=${GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU [0-9][0-9]*:' || true)}
        devices=$(k=0; while [ $k -lt "$count" ]; do echo $k; k=$((k + 1)); done)
    fi
    gpus=$(echo $devices | wc -w)
    if [ "$gpus" -lt 1 ]; then
        echo "run.sh --parallel: no GPU found (CUDA_VISIBLE_DEVICES, nvidia-smi -L); set GPUS=N, or run without --parallel." >&2
        exit 2
    fi
    mkdir -p "$out/logs"
    # The data set, fetched once before the jobs start (else each would).
    PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" $py -m sgdr.data "$@"
fi

names="multistep wr_s${first}_m1 wr_s${second}_m1"
name_of() { echo $names | cut -d ' ' -f $(($1 + 1)); }
start() {  # start N ARGS...: reference run N (0 to 2) with the user's train.py ARGS
    run=$1
    shift
    name=$(name_of $run)
    case $run in
        0) set -- -e $epochs $milestones $again "$@" ;;
        1) set -- -e $epochs --warm-restart -t0 $first $again "$@" ;;
        2) set -- -e $epochs --warm-restart -t0 $second $again "$@" ;;
    esac
    if [ $parallel = 1 ]; then
        # --device cuda: a job whose GPU is missing stops with an error instead of training on the CPU.
        CUDA_VISIBLE_DEVICES=$gpu $py "$here/train.py" --device cuda "$@" > "$out/logs/$name.log" 2>&1
    else
        status=0
        $py "$here/train.py" "$@" || status=$?
        if [ $status -le 128 ] && [ -n "$stopped" ]; then
            status=$stopped  # the signal reached this script only: the run ended on its own
        fi
        if [ $status -gt 128 ]; then  # stopped by a signal (Ctrl-C, SIGTERM, a closed output)
            echo "run.sh: stopped during $name. To continue all three, run again: $invocation" >&2
        fi
        [ $status = 0 ] || exit $status
    fi
}
pids=""
if [ $parallel = 1 ]; then
    # Run n goes to GPU number (n mod gpus) of $devices. With fewer GPUs than runs, the runs given
    # one GPU take it in turn: at once they would time-slice it, each tuning cuDNN's algorithms under
    # the others' load and holding a CUDA context of its own, and a GPU in exclusive-process mode
    # would refuse all but the first.
    if [ "$gpus" -lt 3 ]; then
        echo "run.sh --parallel: $gpus GPU$([ "$gpus" = 1 ] || echo s) for 3 runs: runs that share a GPU take it in" \
            "turn, not at once (at once they would slow each other, tune cuDNN under each other's load, and" \
            "fail on a GPU in exclusive-process mode)."
    fi
    n=0
    while [ $n -lt 3 ]; do
        gpu=$(echo $devices | cut -d ' ' -f $((n % gpus + 1)))
        name=$(name_of $n)
        after=""
        [ $n -lt "$gpus" ] || after=", after $(name_of $((n - gpus)))"
        echo "$name: GPU $gpu, log $out/logs/$name.log$after"
        n=$((n + 1))
    done
    slot=0
    while [ $slot -lt "$gpus" ] && [ $slot -lt 3 ]; do
        gpu=$(echo $devices | cut -d ' ' -f $((slot + 1)))
        (
            failed=0
            n=$slot
            while [ $n -lt 3 ]; do
                start $n "$@" || failed=1
                n=$((n + gpus))
            done
            exit $failed
        ) &
        pids="$pids $!"
        slot=$((slot + 1))
    done
else
    # Ctrl-C reaches this script and the run together: wait for the run to stop at its batch
    # boundary and say how to go on, rather than return the prompt while it is still stopping.
    stopped=""
    trap 'stopped=130' INT
    trap 'stopped=143' TERM
    start 0 "$@"
    start 1 "$@"
    start 2 "$@"
fi
failed=0
for pid in $pids; do
    wait "$pid" || failed=1
done
if [ $failed = 1 ]; then
    echo "run.sh: a run failed; see $out/logs/." >&2
    exit 1
fi
if [ $quick = 1 ]; then
    $py "$here/plot.py" --output-dir "$out" --t-zeros $first $second
fi
