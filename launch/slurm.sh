#!/usr/bin/env bash
# Multi-node GPU training under SLURM: writes a batch script and submits it with sbatch.
#
#   launch/slurm.sh --nodes 2 --gpus-per-node 8 --partition gpu -- --config=stage1_7b:gpu8x24 \
#       --config.mesh='(1,-1,1)' --config.data.batch_size=16 --config.backbone_path=...
#
# Two ways to map processes to GPUs (--per):
#   gpu   one process per GPU (default). `jax.distributed.initialize()` reads everything from
#         SLURM's environment (--config.distributed.auto=True): coordinator = first node of the
#         step, port from the job id, process id = SLURM_PROCID, and its one device =
#         SLURM_LOCALID. Every task must see all of its node's GPUs, so GPUs are requested per
#         node, not bound per task.
#   node  one process per node driving all its GPUs. JAX's SLURM detection would give each
#         process only device SLURM_LOCALID (0), so the task hides SLURM_LOCALID and passes the
#         coordinator (first node of the job, port from the job id), the process count and its
#         SLURM_PROCID explicitly.
# Each process logs to <logdir>/<job>-<jobid>-<rank>.log; sbatch's own output goes to
# <logdir>/<job>-<jobid>.out.
#
# Options:
#   --nodes N, --gpus-per-node G (default 2, 8)     --per gpu|node (default gpu)
#   --partition P, --time T, --job-name NAME (default vaemotion)
#   --sbatch 'OPTION'   one more #SBATCH line, e.g. --sbatch --account=abc (repeatable)
#   --repo DIR          checkout the job runs in (default: this checkout)
#   --venv DIR          virtualenv to activate (default: none)
#   --python PATH       interpreter (default python)
#   --logdir DIR        default <repo>/logs/slurm
#   --no-p2p            NCCL_P2P_DISABLE=1 (consumer cards such as the RTX 4090)
#   --env NAME=VAL      one more environment variable (repeatable)
#   --dry-run           print the batch script and the commands, submit nothing
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

nodes=2 gpus=8 per=gpu partition="" time_limit="" job=vaemotion venv="" python=python p2p=1
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" logdir="" sbatch_extra=()
while (($#)); do
  case "$1" in
    --nodes) nodes="${2:?}"; shift 2 ;;
    --gpus-per-node) gpus="${2:?}"; shift 2 ;;
    --per) per="${2:?}"; shift 2 ;;
    --partition) partition="${2:?}"; shift 2 ;;
    --time) time_limit="${2:?}"; shift 2 ;;
    --job-name) job="${2:?}"; shift 2 ;;
    --sbatch) sbatch_extra+=("${2:?}"); shift 2 ;;
    --repo) repo="${2:?}"; shift 2 ;;
    --venv) venv="${2:?}"; shift 2 ;;
    --python) python="${2:?}"; shift 2 ;;
    --logdir) logdir="${2:?}"; shift 2 ;;
    --no-p2p) p2p=0; shift ;;
    --env) add_env "${2:?--env needs NAME=VALUE}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; break ;;
    *) die "unknown option '$1' (training arguments go after --)" ;;
  esac
done
[[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "--nodes wants a positive number, got '$nodes'"
[[ "$gpus" =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node wants a positive number, got '$gpus'"
[[ "$per" == gpu || "$per" == node ]] || die "--per is gpu or node, got '$per'"
[[ "$job" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--job-name: letters, digits, _ . - only"
need_config "$@"
logdir="${logdir:-$repo/logs/slurm}"

env_vars=("${GPU_ENV[@]}")
((p2p)) || env_vars+=(NCCL_P2P_DISABLE=1)
env_vars+=("${EXTRA_ENV[@]}")

train=("$python" -m vaemotion_jax.train "$@")
if [[ "$per" == gpu ]]; then
  tasks=$gpus
  task_line="$(quoted "${train[@]}" --config.distributed.auto=True)"
else
  tasks=1
  # shellcheck disable=SC2016  # expanded by each task
  hide='unset SLURM_LOCALID; exec "$@" --config.distributed.process_id="$SLURM_PROCID"'
  task_line="$(quoted bash -c "$hide" task "${train[@]}")"
  task_line+=' --config.distributed.coordinator="$head:$port"'
  task_line+=' --config.distributed.num_processes="$SLURM_NTASKS"'
fi

batch_script() {
  echo "#!/bin/bash"
  echo "#SBATCH --job-name=$job"
  echo "#SBATCH --nodes=$nodes"
  echo "#SBATCH --ntasks-per-node=$tasks"
  echo "#SBATCH --gpus-per-node=$gpus"
  echo "#SBATCH --output=$logdir/%x-%j.out"
  [[ -n "$partition" ]] && echo "#SBATCH --partition=$partition"
  [[ -n "$time_limit" ]] && echo "#SBATCH --time=$time_limit"
  local extra
  for extra in "${sbatch_extra[@]}"; do echo "#SBATCH $extra"; done
  echo "set -euo pipefail"
  echo "cd $(shell_word "$repo")"
  [[ -n "$venv" ]] && echo "source $(shell_word "$venv/bin/activate")"
  echo "export $(quoted "${env_vars[@]}")"
  if [[ "$per" == node ]]; then
    echo 'head="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"'  # reads all: no SIGPIPE under pipefail
    echo 'port=$((SLURM_JOB_ID % 4096 + 61440))'
  fi
  echo "srun --kill-on-bad-exit=1 --output=$(shell_word "$logdir/%x-%j-%t.log") $task_line"
}

script="$logdir/$job.sbatch"
run mkdir -p "$logdir"
if ((DRY_RUN)); then
  echo "# $script:"
  batch_script | sed 's/^/    /'
else
  batch_script > "$script"
fi
run sbatch "$script"
