#!/usr/bin/env bash
# Submits a sharded audit and its merge to Slurm: see submit.sh.
#   jobs/slurm/submit-audit.sh [--wait] SPEC OUT N [sbatch options...]
exec "$(dirname "$0")/submit.sh" audit "$@"
