#!/usr/bin/env bash
# Checks the Helm chart helm/weft without a cluster (no API server exists here): every example
# values file (helm/weft/ci/*.yaml) is linted (`helm lint --strict`) and rendered with Helm 3
# and Helm 4, the renderings pass `kubernetes-validate --strict` for Kubernetes 1.27 to 1.35
# and yamllint, scripts/helm_assert.py checks what a reviewer would (and has the real binaries
# in BIN_DIR parse every rendered command line), and every refused values file
# (helm/weft/ci/bad/*.yaml) is refused by the chart's schema, saying what its `# expect:` line
# says. Tools: scripts/setup.sh installs them. Run by the weft crate's test `helm::…` (so by
# scripts/test.sh); by hand: scripts/helm-check.sh target/debug
set -euo pipefail
cd "$(dirname "$0")/.."
BIN_DIR=$(realpath "${1:?usage: helm-check.sh BIN_DIR (where weft, gateway, … are built)}")
CACHE=/var/cache/weft
export PATH="${WEFT_VENV:-$CACHE/venv}/bin:$PATH"
chart=helm/weft
for tool in "$CACHE/helm/v3/helm" "$CACHE/helm/v4/helm" kubernetes-validate yamllint check-jsonschema; do
  command -v "$tool" >/dev/null || { echo "helm-check: $tool missing: run scripts/setup.sh" >&2; exit 1; }
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
no() { echo "FAIL $*"; fail=$((fail + 1)); }
run() { # WHAT COMMAND…: runs it, its output shown only when it fails
  local what=$1
  shift
  if "$@" >"$out/log" 2>&1; then ok; else no "$what"; sed 's/^/  /' "$out/log" | head -40; fi
}

lint='{extends: default, rules: {line-length: {max: 120}, document-start: disable, comments: {min-spaces-from-content: 1}}}'
run "yamllint of the values files" yamllint -s -d "$lint" "$chart/Chart.yaml" "$chart/values.yaml" "$chart"/ci/*.yaml "$chart"/ci/bad/*.yaml
run "values.schema.json is a valid JSON schema" check-jsonschema --check-metaschema "$chart/values.schema.json"
run "the chart's values and the examples meet the schema" \
  check-jsonschema --schemafile "$chart/values.schema.json" "$chart/values.yaml" "$chart"/ci/*.yaml
for f in "$chart"/ci/bad/*.yaml; do
  if check-jsonschema --schemafile "$chart/values.schema.json" "$f" >/dev/null 2>&1; then
    no "check-jsonschema accepts the refused $f"
  else ok; fi
done

versions=(1.27 1.28 1.29 1.30 1.31 1.32 1.33 1.34 1.35)
for major in 3 4; do
  helm="$CACHE/helm/v$major/helm"
  run "helm $major lint --strict (chart defaults)" "$helm" lint --strict "$chart"
  rendered=()
  for f in "$chart"/ci/*.yaml; do
    name=$(basename "$f" .yaml)
    run "helm $major lint --strict -f $f" "$helm" lint --strict "$chart" -f "$f"
    r="$out/helm$major-$name.yaml"
    if "$helm" template weft "$chart" --namespace weft -f "$f" >"$r" 2>"$out/log"; then
      ok
      rendered+=("$r")
      run "yamllint of helm $major's rendering of $f" yamllint -s -d "{extends: relaxed, rules: {line-length: disable}}" "$r"
      run "helm_assert.py of helm $major's rendering of $f" python3 scripts/helm_assert.py "$r" "$f" "$BIN_DIR"
    else
      no "helm $major template -f $f"
      sed 's/^/  /' "$out/log"
    fi
  done
  for k in "${versions[@]}"; do
    run "kubernetes-validate --strict -k $k of helm $major's renderings" \
      kubernetes-validate --strict --quiet -k "$k.0" "${rendered[@]}"
  done
  for f in "$chart"/ci/bad/*.yaml; do
    expect=$(sed -n 's/^# expect: //p' "$f")
    if "$helm" template weft "$chart" --namespace weft -f "$f" >"$out/log" 2>&1; then
      no "helm $major renders the refused $f"
    elif ! grep -q "schema" "$out/log"; then
      no "helm $major refuses $f, but not by the schema:"
      sed 's/^/  /' "$out/log"
    elif ! grep -Eq "$expect" "$out/log"; then
      no "helm $major refuses $f without naming /$expect/:"
      sed 's/^/  /' "$out/log"
    else ok; fi
  done
done
# The optional ServiceMonitors (a CRD's kind: no Kubernetes schema to validate them against):
# one each for the gateway, ipam-svc and the node pods, each with a headless Service naming the
# metrics ports the pods declare.
for major in 3 4; do
  r="$out/helm$major-servicemonitor.yaml"
  if "$CACHE/helm/v$major/helm" template weft "$chart" --namespace weft \
      -f "$chart/ci/three-replicas-postgres.yaml" --set metrics.serviceMonitor.enabled=true >"$r" 2>"$out/log"; then
    run "yamllint of helm $major's rendering with ServiceMonitors" yamllint -s -d "{extends: relaxed, rules: {line-length: disable}}" "$r"
    n=$(grep -c '^kind: ServiceMonitor' "$r" || true)
    if [ "$n" = 3 ]; then ok; else no "helm $major rendered $n ServiceMonitors, not 3"; fi
    for port in metrics agent-metrics dns-metrics; do
      if grep -q "targetPort: $port" "$r"; then ok; else no "helm $major: no Service port for $port"; fi
    done
  else
    no "helm $major template with metrics.serviceMonitor.enabled=true"
    sed 's/^/  /' "$out/log"
  fi
done
echo "helm-check: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
