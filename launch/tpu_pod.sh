#!/usr/bin/env bash
# Runs one training command on every worker of a Cloud TPU VM (a pod slice), then collects the
# workers' logs here.
#
#   launch/tpu_pod.sh --tpu my-v4-32 --zone us-central2-b -- --config=stage1_7b:tpu_v4_8 \
#       --config.mesh='(1,-1,1)' --config.data.batch_size=32 --config.backbone_path=...
#
# Every worker runs the same program: a multi-host TPU job hangs when one host does different
# work. `jax.distributed.initialize()` finds the pod's coordinator and process ids in the TPU
# VM metadata (--config.distributed.auto=True is added). The checkout, virtualenv and data paths
# must exist on every worker (relative paths start in the worker's home directory). Each worker
# tees its output to <repo>/logs/<run>/<hostname>.log; afterwards those files are copied to
# --logdir here, next to all.log (the interleaved stream of all workers).
#
# Options:
#   --tpu NAME, --zone ZONE (required), --project P
#   --repo DIR      checkout on the workers (default vaemotion_jax)
#   --venv DIR      virtualenv on the workers (default <repo>/.venv; --venv '' for none)
#   --run NAME      name of this run's log folder (default <tpu>-<date>)
#   --logdir DIR    where the logs land here (default logs/<run>)
#   --env NAME=VAL  one more environment variable on every worker (repeatable)
#   --dry-run       print exactly what would run, run nothing
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

tpu="" zone="" project="" repo=vaemotion_jax venv=UNSET run_name="" logdir=""
while (($#)); do
  case "$1" in
    --tpu) tpu="${2:?}"; shift 2 ;;
    --zone) zone="${2:?}"; shift 2 ;;
    --project) project="${2:?}"; shift 2 ;;
    --repo) repo="${2:?}"; shift 2 ;;
    --venv) venv="${2?}"; shift 2 ;;
    --run) run_name="${2:?}"; shift 2 ;;
    --logdir) logdir="${2:?}"; shift 2 ;;
    --env) add_env "${2:?--env needs NAME=VALUE}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; break ;;
    *) die "unknown option '$1' (training arguments go after --)" ;;
  esac
done
[[ -n "$tpu" ]] || die "--tpu NAME is required"
[[ -n "$zone" ]] || die "--zone ZONE is required"
need_config "$@"
[[ "$venv" == UNSET ]] && venv="$repo/.venv"
run_name="${run_name:-$tpu-$(date +%Y%m%d-%H%M%S)}"
[[ "$run_name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--run: letters, digits, _ . - only"
logdir="${logdir:-logs/$run_name}"
remote_logs="$repo/logs/$run_name"

# What every worker runs (one string for the remote shell).
remote="set -eo pipefail"
[[ -n "$venv" ]] && remote+="; source $(shell_word "$venv/bin/activate")"
remote+="; cd $(shell_word "$repo")"
remote+="; mkdir -p $(shell_word "logs/$run_name")"
remote+="; export $(quoted PYTHONUNBUFFERED=1 "${EXTRA_ENV[@]}")"
remote+="; $(quoted python -m vaemotion_jax.train "$@" --config.distributed.auto=True)"
remote+=" 2>&1 | tee $(shell_word "logs/$run_name")/\$(hostname).log"

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=("--zone=$zone")
[[ -n "$project" ]] && where+=("--project=$project")

run mkdir -p "$logdir"
status=0
run_logged "$logdir/all.log" "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=all \
  "--command=$remote" || status=$?
# Collect the logs even when the run failed: they say why.
run "${gcloud_tpu[@]}" scp "${where[@]}" --worker=all "$tpu:$remote_logs/*.log" "$logdir/" \
  || echo "$(basename "$0"): collecting logs from the workers failed" >&2
exit "$status"
