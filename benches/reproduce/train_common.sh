# Sourced by the accuracy reproductions (abadi_pca.sh, mnist_eps1.sh, mnist_eps3.sh,
# fashion_eps3.sh): one `dpaudit train` on real data, then its accuracy and epsilon against a bar.
#
#   reproduce_training DATASET BAR EPSILON OUT THREADS -- TRAIN_FLAGS...
#
# DATASET is mnist or fashion-mnist; DATA=path names its folder (default: data/DATASET, fetched
# there with `dpaudit data fetch` when it holds no data).
# Re-running continues the run in OUT (--resume); delete OUT to start over.
reproduce_training() {
    local dataset=$1 bar=$2 epsilon=$3 out=$4 threads=$5
    shift 5
    [[ "${1:-}" == "--" ]] && shift
    cd "$(dirname "${BASH_SOURCE[0]}")/../.."
    local data=${DATA:-data/$dataset}
    cargo build --release --quiet
    local bin=target/release/dpaudit
    [[ -e "$data/train-images-idx3-ubyte.gz" || -e "$data/train-images-idx3-ubyte" ]] || "$bin" data fetch "$dataset" --dir "$data"
    local resume=()
    [[ -e "$out/ledger.jsonl" ]] && resume=(--resume)
    local start
    start=$(date +%s)
    "$bin" train --dataset "$dataset" --data-dir "$data" --validation 5000 --target-epsilon "$epsilon" --delta 1e-5 \
        "$@" --seed 1 --threads "$threads" --out "$out" "${resume[@]}"
    python3 benches/reproduce/summarise_train.py "$bar" "$epsilon" "$out" "$(( $(date +%s) - start ))"
}
