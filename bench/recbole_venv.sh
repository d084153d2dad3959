#!/usr/bin/env bash
# Makes the RecBole 1.2.1 venv the bench scripts use, if it is not there yet (torch 2.15.0 on
# CPU; RecBole without its pinned dependencies, which today's numpy/scipy/torch break: the
# shims in bench/recbole_shims.py cover what it needs).   usage: bench/recbole_venv.sh VENV
set -euo pipefail
VENV=$1
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.15.0 numpy scipy pandas colorlog colorama texttable \
    tabulate thop pyyaml scikit-learn tqdm plotly requests psutil
  "$VENV/bin/pip" install -q --no-deps recbole==1.2.1
fi
# L-DiffRec's clustering (RecBole imports it when n_cate > 1)
"$VENV/bin/python" -c "import kmeans_pytorch" 2> /dev/null || "$VENV/bin/pip" install -q --no-deps kmeans_pytorch==0.3
