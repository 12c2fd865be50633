#!/usr/bin/env bash
# The main job on the lab: a machine-env for gazette in prod, the gazette service deployed onto it,
# and their status. Run by `make demo` after `make lab`; safe to run again (the second run changes nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
TIN=${TIN:-.venv/bin/inv}
INV=${TINSNIP_LAB_DIR:-.lab}/hosts.yaml
TASKS=$("$TIN" --list 2>/dev/null)
has_task() { grep -q "^  $1 " <<<"$TASKS"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "the lab"
"$TIN" lab.status --inventory "$INV" 2>/dev/null || "$TIN" lab.status

if has_task doctor; then
  step "preflight: inv doctor"
  "$TIN" doctor --inventory "$INV"
fi

step "gazette-prod's numbers"
"$TIN" machine.info --service=gazette --env=prod --inventory "$INV" 2>/dev/null \
  || "$TIN" machine.info --service=gazette --env=prod --offline

if has_task machine.create; then
  step "inv machine.create --service=gazette --env=prod"
  "$TIN" machine.create --service=gazette --env=prod --inventory "$INV" --yes
  step "machine.status"
  "$TIN" machine.status --service=gazette --env=prod --inventory "$INV"
else
  echo "machine.create is still to come: the demo stops at the numbers."
  exit 0
fi

if has_task service.deploy; then
  step "inv service.deploy --service=gazette --env=prod"
  "$TIN" service.deploy --service=gazette --env=prod --inventory "$INV" --yes
  step "service.status"
  "$TIN" service.status --service=gazette --env=prod --inventory "$INV"
  addr=$(python3 -c "import yaml,sys; print(yaml.safe_load(open('$INV'))['docker_hosts']['docker1']['address'])")
  step "gazette answers on $addr:10100 (asked from docker1)"
  ssh -i "$(dirname "$INV")/id_ed25519" -o UserKnownHostsFile="$(dirname "$INV")/known_hosts" \
      -o StrictHostKeyChecking=yes -o BatchMode=yes "root@$addr" \
      "wget -qO- http://127.0.0.1:10100/ 2>/dev/null || curl -fsS http://127.0.0.1:10100/"
else
  echo "service.deploy is still to come."
fi
