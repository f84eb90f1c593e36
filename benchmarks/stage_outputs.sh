#!/usr/bin/env bash
# The six stages (prepare -> register) with the code of one source tree, in a fresh folder: the
# "before" and "after" of a refactor, compared by benchmarks/compare_stage_outputs.py.
#   git worktree add /tmp/before HEAD~1
#   bash benchmarks/stage_outputs.sh /tmp/before /tmp/out-before [OVERLAY]
#   bash benchmarks/stage_outputs.sh "$PWD" /tmp/out-after [OVERLAY]
#   .venv/bin/python benchmarks/compare_stage_outputs.py /tmp/out-before /tmp/out-after
# OVERLAY: a params overlay whose @TREE@ is replaced by TREE (e.g. extends: @TREE@/configs/...).
# One torch thread, the same for both runs: float sums depend on the thread count.
set -euo pipefail
TREE=$(realpath "$1"); OUT=$2; OVERLAY=${3:-}
PYTHON=${PYTHON:-$(realpath "$(dirname "$0")/../.venv/bin/python")}
[ -n "$OVERLAY" ] && OVERLAY=$(realpath "$OVERLAY")
rm -rf "$OUT"; mkdir -p "$OUT"; cd "$OUT"
cp "$TREE/params.yaml" params.yaml
PARAMS=params.yaml
if [ -n "$OVERLAY" ]; then sed "s#@TREE@#$TREE#g" "$OVERLAY" > overlay.yaml; PARAMS=overlay.yaml; fi
git init -q . && git -c user.email=stage@outputs -c user.name=stage-outputs commit -q --allow-empty -m init
export PYTHONPATH=$TREE PREFECT_SERVER_ANALYTICS_ENABLED=false OMP_NUM_THREADS=1
for stage in prepare warmup train evaluate gate register; do
  start=$(date +%s)
  "$PYTHON" -m iocane.stages "$stage" --params "$PARAMS" > "log-$stage.txt" 2>&1
  echo "$stage $(( $(date +%s) - start )) s"
done
