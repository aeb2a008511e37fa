"""Launchers: each --dry-run prints exactly what a real run executes (checked against stubbed
python / gcloud / sbatch / srun that record what they were called with), and the commands they
build do the right thing when a shell runs them."""
import json
import os
import shlex
import socket
import stat
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
TRAIN = ["--config=stage1_7b:gpu8x24", "--config.workdir=/runs/it's a test"]
WATCHED = ("CUDA_VISIBLE_DEVICES", "NCCL_P2P_DISABLE", "NCCL_IB_DISABLE", "XLA_FLAGS",
           "XLA_PYTHON_CLIENT_MEM_FRACTION", "SLURM_LOCALID", "SLURM_PROCID", "EXTRA")


def executable(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return path


def recorder(path: str) -> str:
    """A stand-in program that appends {argv, env} of each call to $RECORD as a JSON line."""
    return executable(path, f"""#!{sys.executable}
import json, os, sys
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in {WATCHED!r}}}}}) + "\\n")
""")


def records(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def launch(script: str, *args: str, env: dict | None = None, cwd: str = ROOT,
           check: bool = True) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    p = subprocess.run([os.path.join(LAUNCH, script), *args], capture_output=True, text=True,
                       env=full, cwd=cwd, timeout=60)
    if check and p.returncode:
        raise AssertionError(f"{script} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def split_env(words: list[str]) -> tuple[dict, list[str]]:
    """`env A=1 B=2 prog args` -> ({A: 1, B: 2}, [prog, args])."""
    assert words[0] == "env", words
    env, i = {}, 1
    while "=" in words[i] and not words[i].startswith("-"):
        k, v = words[i].split("=", 1)
        env[k] = v
        i += 1
    return env, words[i:]


# --- single node, 8 GPUs -------------------------------------------------------------------------

def test_single_node_dry_run_is_what_runs(tmp_path):
    python = recorder(str(tmp_path / "python"))
    log = str(tmp_path / "logs" / "run.log")
    args = ["--python", python, "--log", log, "--env", "EXTRA=a b", "--", *TRAIN]
    dry = launch("single_node_8gpu.sh", "--dry-run", *args).stdout.strip().splitlines()
    assert len(dry) == 1 and dry[0].endswith(f"2>&1 | tee -a {log}")
    env, argv = split_env(shlex.split(dry[0].rsplit(" 2>&1 |", 1)[0]))
    assert argv == [python, "-m", "vaemotion_jax.train", *TRAIN]
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
    assert env["NCCL_P2P_DISABLE"] == "1" and env["NCCL_IB_DISABLE"] == "1"
    assert float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) > 0.9   # the default 0.75 is too little
    assert not os.path.exists(log), "a dry run must not run anything"

    launch("single_node_8gpu.sh", *args, env={"RECORD": str(tmp_path / "calls.jsonl")})
    (call,) = records(str(tmp_path / "calls.jsonl"))
    assert call["argv"] == ["-m", "vaemotion_jax.train", *TRAIN]
    for k in WATCHED:
        if k in env:
            assert call["env"][k] == env[k], k
    assert os.path.exists(log)


def test_single_node_options_and_refusals(tmp_path):
    dry = launch("single_node_8gpu.sh", "--dry-run", "--gpus", "2", "--p2p", "--", *TRAIN).stdout
    env, _ = split_env(shlex.split(dry.split(" 2>&1 |")[0]))
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and "NCCL_P2P_DISABLE" not in env
    for bad, message in ((["--", "--config.steps=3"], "no --config"),
                         (["--gpus", "0", "--", *TRAIN], "--gpus"),
                         (["--frobnicate"], "unknown option"),
                         (["--env", "1X=2", "--", *TRAIN], "NAME=VALUE")):
        p = launch("single_node_8gpu.sh", "--dry-run", *bad, check=False)
        assert p.returncode == 2 and message in p.stderr, (bad, p.stderr)


# --- TPU pod --------------------------------------------------------------------------------------

def test_tpu_pod_dry_run_is_what_runs(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder(str(bin_dir / "gcloud"))
    args = ["--tpu", "pod-1", "--zone", "us-central2-b", "--project", "proj", "--run", "r1",
            "--logdir", str(tmp_path / "here"), "--env", "EXTRA=x y", "--", *TRAIN]
    lines = launch("tpu_pod.sh", "--dry-run", *args).stdout.strip().splitlines()
    assert lines[0] == f"mkdir -p {tmp_path / 'here'}"
    ssh = shlex.split(lines[1].rsplit(" 2>&1 |", 1)[0])
    scp = shlex.split(lines[2])
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod-1"]
    assert {"--zone=us-central2-b", "--project=proj", "--worker=all"} <= set(ssh)
    assert scp[4] == "scp" and "--worker=all" in scp
    assert scp[-2:] == ["pod-1:vaemotion_jax/logs/r1/*.log", f"{tmp_path / 'here'}/"]
    assert not (tmp_path / "here").exists()

    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(tmp_path / "calls.jsonl")}
    launch("tpu_pod.sh", *args, env=env)
    calls = [c["argv"] for c in records(str(tmp_path / "calls.jsonl"))]
    assert calls == [ssh[1:], scp[1:]]


def test_tpu_worker_command_runs_training_and_logs(tmp_path):
    """The string each worker's shell runs: venv, checkout, env, train with auto distributed
    init, output teed to logs/<run>/<hostname>.log."""
    lines = launch("tpu_pod.sh", "--dry-run", "--tpu", "t", "--zone", "z", "--run", "r2",
                   "--env", "EXTRA=x y", "--", *TRAIN).stdout.splitlines()
    command = next(w for w in shlex.split(lines[1].rsplit(" 2>&1 |", 1)[0])
                   if w.startswith("--command="))[len("--command="):]
    home = tmp_path / "home"
    venv_bin = home / "vaemotion_jax" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    recorder(str(venv_bin / "python"))
    (venv_bin / "activate").write_text(f'export PATH="{venv_bin}:$PATH"\n')
    subprocess.run(["bash", "-c", command], cwd=home, check=True, timeout=60,
                   env={**os.environ, "RECORD": str(tmp_path / "calls.jsonl")})
    (call,) = records(str(tmp_path / "calls.jsonl"))
    assert call["argv"] == ["-m", "vaemotion_jax.train", *TRAIN,
                            "--config.distributed.auto=True"]
    assert call["env"]["EXTRA"] == "x y"
    assert (home / "vaemotion_jax" / "logs" / "r2" / f"{socket.gethostname()}.log").exists()


def test_tpu_pod_refusals():
    for bad, message in ((["--zone", "z", "--", *TRAIN], "--tpu"),
                         (["--tpu", "t", "--", *TRAIN], "--zone"),
                         (["--tpu", "t", "--zone", "z", "--run", "a/b", "--", *TRAIN], "--run")):
        p = launch("tpu_pod.sh", "--dry-run", *bad, check=False)
        assert p.returncode == 2 and message in p.stderr, (bad, p.stderr)


# --- SLURM ----------------------------------------------------------------------------------------

FAKE_SRUN = """#!/bin/bash
# srun stand-in: runs the task once per rank of the job with SLURM's per-task variables.
out=""
while [[ "$1" == --* ]]; do [[ "$1" == --output=* ]] && out="${1#--output=}"; shift; done
for ((t = 0; t < SLURM_NTASKS; t++)); do
  f="${out//%t/$t}"; f="${f//%x/$SLURM_JOB_NAME}"; f="${f//%j/$SLURM_JOB_ID}"
  SLURM_PROCID=$t SLURM_LOCALID=$((t % TASKS_PER_NODE)) "$@" > "$f" 2>&1
done
"""
FAKE_SCONTROL = """#!/bin/bash
[[ "$1 $2" == "show hostnames" ]] && printf 'gpu-a17\\ngpu-a18\\n'
"""


def slurm_bin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder(str(bin_dir / "sbatch"))
    executable(str(bin_dir / "srun"), FAKE_SRUN)
    executable(str(bin_dir / "scontrol"), FAKE_SCONTROL)
    return bin_dir


def submitted_script(tmp_path, per: str) -> tuple[str, str]:
    """(dry-run's printed batch script, the script a real run hands to sbatch)."""
    bin_dir = slurm_bin(tmp_path)
    python = recorder(str(tmp_path / "python"))
    args = ["--nodes", "2", "--gpus-per-node", "4", "--per", per, "--partition", "p",
            "--sbatch", "--account=acct", "--python", python, "--logdir", str(tmp_path / "logs"),
            "--job-name", "vae", "--no-p2p", "--env", "EXTRA=1", "--", *TRAIN]
    out = launch("slurm.sh", "--dry-run", *args).stdout.splitlines()
    script_path = str(tmp_path / "logs" / "vae.sbatch")
    assert out[0] == f"mkdir -p {tmp_path / 'logs'}" and out[1] == f"# {script_path}:"
    assert out[-1] == f"sbatch {script_path}" and not os.path.exists(script_path)
    printed = "\n".join(line[4:] for line in out[2:-1]) + "\n"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(tmp_path / "sbatch.jsonl")}
    launch("slurm.sh", *args, env=env)
    (call,) = records(str(tmp_path / "sbatch.jsonl"))
    assert call["argv"] == [script_path]
    with open(script_path) as f:
        return printed, f.read()


def run_batch_script(tmp_path, script: str, tasks: int, per_node: int) -> list[dict]:
    """Runs the batch script as SLURM would (fake srun/scontrol); returns the python calls."""
    bin_dir = tmp_path / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "RECORD": str(tmp_path / "tasks.jsonl"), "SLURM_JOB_ID": "81234",
           "SLURM_JOB_NAME": "vae", "SLURM_NTASKS": str(tasks), "TASKS_PER_NODE": str(per_node),
           "SLURM_JOB_NODELIST": "gpu-a[17-18]", "SLURM_STEP_NODELIST": "gpu-a[17-18]"}
    subprocess.run(["bash", "-n", "-c", script], check=True)
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=60)
    return sorted(records(str(tmp_path / "tasks.jsonl")), key=lambda c: c["env"]["SLURM_PROCID"])


def test_slurm_per_gpu(tmp_path):
    printed, script = submitted_script(tmp_path, "gpu")
    assert printed == script
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=p", "#SBATCH --account=acct"):
        assert line in script.splitlines()
    calls = run_batch_script(tmp_path, script, tasks=8, per_node=4)
    assert len(calls) == 8
    for rank, call in enumerate(calls):
        # each rank leaves everything to jax.distributed's SLURM detection
        assert call["argv"] == ["-m", "vaemotion_jax.train", *TRAIN, "--config.distributed.auto=True"]
        assert call["env"]["SLURM_PROCID"] == str(rank)
        assert call["env"]["SLURM_LOCALID"] == str(rank % 4)
        assert call["env"]["NCCL_P2P_DISABLE"] == "1" and call["env"]["EXTRA"] == "1"
    assert sorted(os.listdir(tmp_path / "logs")) == sorted(
        ["vae.sbatch"] + [f"vae-81234-{t}.log" for t in range(8)])


def test_slurm_per_node(tmp_path):
    printed, script = submitted_script(tmp_path, "node")
    assert printed == script
    assert "#SBATCH --ntasks-per-node=1" in script.splitlines()
    calls = run_batch_script(tmp_path, script, tasks=2, per_node=1)
    port = 81234 % 4096 + 61440
    for rank, call in enumerate(calls):
        assert call["argv"] == ["-m", "vaemotion_jax.train", *TRAIN,
                                f"--config.distributed.coordinator=gpu-a17:{port}",
                                "--config.distributed.num_processes=2",
                                f"--config.distributed.process_id={rank}"]
        # hidden, so JAX does not narrow the process to device SLURM_LOCALID
        assert call["env"]["SLURM_LOCALID"] is None


def test_jax_slurm_detection_matches_the_launcher(monkeypatch):
    """What slurm.sh relies on: with SLURM_LOCALID jax.distributed takes everything from SLURM
    and keeps one device per process; without it, SLURM is not detected at all."""
    from jax._src import clusters
    for k, v in {"SLURM_JOB_ID": "81234", "SLURM_STEP_NODELIST": "gpu-a[17-18]",
                 "SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("JAX_COORDINATOR_PORT", raising=False)
    detect = lambda: clusters.ClusterEnv.auto_detect_unset_distributed_params(
        None, None, None, None, None, None)
    assert detect() == (f"gpu-a17:{81234 % 4096 + 61440}", 8, 5, [1])
    monkeypatch.delenv("SLURM_LOCALID")
    assert detect() == (None, None, None, None)


def test_slurm_refusals():
    for bad, message in ((["--per", "rack", "--", *TRAIN], "--per"),
                         (["--nodes", "x", "--", *TRAIN], "--nodes"),
                         (["--", "--config.steps=2"], "no --config")):
        p = launch("slurm.sh", "--dry-run", *bad, check=False)
        assert p.returncode == 2 and message in p.stderr, (bad, p.stderr)


@pytest.mark.parametrize("script", ["single_node_8gpu.sh", "slurm.sh", "tpu_pod.sh"])
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", os.path.join(LAUNCH, script)], check=True)
