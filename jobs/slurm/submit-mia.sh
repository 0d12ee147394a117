#!/usr/bin/env bash
# Submits a sharded mia and its merge to Slurm: see submit.sh.
#   jobs/slurm/submit-mia.sh [--wait] SPEC OUT N [sbatch options...]
exec "$(dirname "$0")/submit.sh" mia "$@"
