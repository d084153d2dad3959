#!/usr/bin/env bash
# Makes the pyKT 0.0.38 venv the knowledge-tracing bench scripts use, if it is not there yet
# (torch 2.15.0 on CPU; pyKT without its pinned dependencies, which would pull wandb and old
# pins: its model classes need only torch and numpy).   usage: bench/pykt_venv.sh VENV
set -euo pipefail
VENV=$1
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.15.0 numpy pandas scikit-learn
  "$VENV/bin/pip" install -q --no-deps pykt-toolkit==0.0.38
fi
"$VENV/bin/python" -c "from pykt.models.dkt import DKT; from pykt.models.sakt import SAKT; from pykt.models.akt import AKT"
