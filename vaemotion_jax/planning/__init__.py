"""The planner behind `python -m vaemotion_jax.plan` (the entry point: flags and main).

  programs.py      each stage's step from shapes alone, sharded and jitted as the trainer does
  xla_analysis.py  memory, FLOPs and collective bytes of a compiled step; the CPU proxy
  compile.py       `make_plan`: compile a stage on a mesh and read the analysis
  report.py        the step-time estimate and the printed / JSON report
"""
from vaemotion_jax.planning.compile import Plan, make_plan
from vaemotion_jax.planning.programs import (PROGRAMS, Options, Program, sequence_length,
                                             stage1_program, stage2_program)
from vaemotion_jax.planning.report import Assumptions, as_json, estimate, report
from vaemotion_jax.planning.xla_analysis import collective_traffic

__all__ = ["Plan", "make_plan", "PROGRAMS", "Options", "Program", "sequence_length",
           "stage1_program", "stage2_program", "Assumptions", "as_json", "estimate", "report",
           "collective_traffic"]
