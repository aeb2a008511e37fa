#!/usr/bin/env bash
# One process driving the 8 GPUs of one machine (e.g. 8 x RTX 4090): JAX sees 8 local devices
# and the config's mesh spreads over them; no jax.distributed, no coordinator.
#
#   launch/single_node_8gpu.sh -- --config=stage1_7b:gpu8x24 \
#       --config.backbone_path=/ckpt/Qwen2.5-VL-7B-Instruct \
#       --config.audio_encoder_path=/ckpt/ast-finetuned-audioset-10-10-0.4593
#
# NCCL on 4090 boxes: the cards have no working peer-to-peer over PCIe, and NCCL's P2P path
# hangs or fails on them, so NCCL_P2P_DISABLE=1 sends the collectives through host memory
# (use --p2p on cards where P2P works, e.g. with NVLink); NCCL_IB_DISABLE=1 since one box has no
# InfiniBand.
#
# Options:
#   --gpus N        GPUs to use, 0..N-1 (default 8)
#   --p2p           keep NCCL's peer-to-peer path on
#   --python PATH   interpreter (default: python)
#   --log FILE      append the output here too (default logs/single_node-<date>.log)
#   --env NAME=VAL  one more environment variable (repeatable)
#   --dry-run       print exactly what would run, run nothing
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

gpus=8 p2p=0 python=python log="logs/single_node-$(date +%Y%m%d-%H%M%S).log"
while (($#)); do
  case "$1" in
    --gpus) gpus="${2:?--gpus needs a number}"; shift 2 ;;
    --p2p) p2p=1; shift ;;
    --python) python="${2:?--python needs a path}"; shift 2 ;;
    --log) log="${2:?--log needs a file}"; shift 2 ;;
    --env) add_env "${2:?--env needs NAME=VALUE}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; break ;;
    *) die "unknown option '$1' (training arguments go after --)" ;;
  esac
done
[[ "$gpus" =~ ^[1-9][0-9]*$ ]] || die "--gpus wants a positive number, got '$gpus'"
need_config "$@"

env_vars=("CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((gpus - 1)))" NCCL_IB_DISABLE=1)
((p2p)) || env_vars+=(NCCL_P2P_DISABLE=1)
env_vars+=("${GPU_ENV[@]}" "${EXTRA_ENV[@]}")

run_logged "$log" env "${env_vars[@]}" "$python" -m vaemotion_jax.train "$@"
