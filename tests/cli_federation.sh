#!/usr/bin/env bash
# The README's federation walkthrough through the real executable: provision, a coordinator,
# two sites over mutual TLS, status, then segment with the final model. Every wait is bounded.
set -euo pipefail
splitfed="$1"
source "$(dirname "${BASH_SOURCE[0]}")/shell_helpers.sh"
shell_test_begin cli_federation TERM 30 coordinator.out coordinator.log a.out a.log b.out b.log \
  c.out c.log

"$splitfed" provision --out kit --sites a,b,c > /dev/null
# Site c's certificate is revoked before the run: the CA's list and the coordinator kit's
# copy are both re-signed; revoking it again is refused.
"$splitfed" provision --out kit --revoke c > revoke.out
grep -q "revoked the certificate of site c" revoke.out && grep -q "kit/coordinator/revoked.crl" revoke.out \
  || { echo "provision --revoke said:"; cat revoke.out; exit 1; }
if "$splitfed" provision --out kit --revoke c > again.out 2>&1; then
  echo "a second revocation of c was accepted"; cat again.out; exit 1
fi
grep -q "is already revoked" again.out || { echo "second revocation:"; cat again.out; exit 1; }

# A typo in coordinator.toml's [method] (the schema experiment files share) stops the
# coordinator before it serves, with the key's full name.
{ cat kit/coordinator/coordinator.toml; printf '\n[method]\nrefinment = "hard"\n'; } \
  > kit/coordinator/typo.toml
if "$splitfed" coordinator --config kit/coordinator/typo.toml --listen 127.0.0.1:0 \
  > typo.out 2>&1; then
  echo "a coordinator.toml with an unknown key was accepted"; cat typo.out; exit 1
fi
grep -q "typo.toml: method.refinment: unknown key" typo.out \
  || { echo "the unknown key was not named:"; cat typo.out; exit 1; }
"$splitfed" coordinator --config kit/coordinator/coordinator.toml --listen 127.0.0.1:0 \
  --rounds 2 --min-sites 2 --image-size 32 > coordinator.out 2> coordinator.log &
pids+=($!)
wait_for_port coordinator.out

"$splitfed" client --config kit/sites/a/site.toml --phantom 20 --seed 1 \
  --coordinator "127.0.0.1:$port" > a.out 2> a.log &
pids+=($!)
"$splitfed" client --config kit/sites/b/site.toml --phantom 20 --seed 2 \
  --coordinator "127.0.0.1:$port" > b.out 2> b.log &
pids+=($!)
# The revoked site is refused by name and gives up at once (no retries against a refusal).
if timeout 60 "$splitfed" client --config kit/sites/c/site.toml --phantom 20 --seed 3 \
  --coordinator "127.0.0.1:$port" > c.out 2> c.log; then
  echo "revoked site c was let in"; cat c.out c.log; exit 1
fi
grep -q "the certificate of 'c' is revoked" c.out c.log \
  || { echo "site c was not told it is revoked:"; cat c.out c.log; exit 1; }
"$splitfed" status --config kit/admin/admin.toml --coordinator "127.0.0.1:$port" --json \
  > status.json
grep -q '"status": "running"' status.json || { echo "status did not report the run"; cat status.json; exit 1; }

for pid in "${pids[@]}"; do
  timeout 120 tail --pid="$pid" -f /dev/null || { echo "a process did not finish"; exit 1; }
done
grep -q "run finished after 2 rounds" a.out || { echo "site a:"; cat a.out a.log; exit 1; }
grep -q "run finished after 2 rounds" b.out || { echo "site b:"; cat b.out b.log; exit 1; }
test -f kit/coordinator/checkpoints/final.pt
test -f kit/coordinator/coordinator.db

# With the coordinator gone, status says so and where the run's history is.
if "$splitfed" status --config kit/admin/admin.toml --coordinator "127.0.0.1:$port" \
  > gone.out 2>&1; then
  echo "status succeeded with no coordinator"; cat gone.out; exit 1
fi
grep -q "no coordinator answers at 127.0.0.1:$port" gone.out \
  && grep -q "coordinator.db" gone.out || { echo "status without a coordinator:"; cat gone.out; exit 1; }

"$splitfed" phantoms --out scans --count 3 --size 40 > /dev/null
"$splitfed" segment --model kit/coordinator/checkpoints/final.pt --input scans --output masks
test "$(ls masks | wc -l)" -eq 3
echo "federation walkthrough: 2 sites, 2 rounds, 3 masks"
