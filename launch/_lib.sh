# Helpers shared by the launchers (sourced, not run).

DRY_RUN=0
EXTRA_ENV=()

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

# One word for a shell: as is when safe, else in single quotes.
shell_word() {
  if [[ -n "$1" && "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

# Prints a command as one shell-quoted line (what --dry-run shows, and what runs).
quoted() {
  local out="" a
  for a in "$@"; do out+="$(shell_word "$a") "; done
  printf '%s\n' "${out% }"
}

# Runs a command, or with --dry-run prints it.
run() {
  if ((DRY_RUN)); then quoted "$@"; else "$@"; fi
}

# Runs a command with its output also appended to a log file, or prints both.
run_logged() {
  local log="$1"; shift
  if ((DRY_RUN)); then
    echo "$(quoted "$@") 2>&1 | tee -a $(shell_word "$log")"
  else
    mkdir -p "$(dirname "$log")"
    "$@" 2>&1 | tee -a "$log"
  fi
}

# --env K=V: validated and collected in EXTRA_ENV.
add_env() {
  [[ "$1" =~ ^[A-Za-z_][A-Za-z0-9_]*=.*$ ]] || die "--env wants NAME=VALUE, got '$1'"
  EXTRA_ENV+=("$1")
}

# The training arguments must pick a config.
need_config() {
  local a
  for a in "$@"; do [[ "$a" == --config=* ]] && return 0; done
  die "no --config=... among the training arguments (after --), e.g. --config=stage1_7b:gpu8x24"
}

# GPU environment shared by the GPU launchers. XLA preallocates 75% of a GPU by default, less
# than the 7B plans need on a 24 GB card; the latency-hiding scheduler overlaps the FSDP
# all-gathers with compute.
GPU_ENV=(
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.94
  "XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true${XLA_FLAGS:+ $XLA_FLAGS}"
  PYTHONUNBUFFERED=1
)
