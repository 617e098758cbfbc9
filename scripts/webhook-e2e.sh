#!/usr/bin/env bash
# End-to-end test of `ferry webhook` against a real kube-apiserver (+ etcd), loopback only.
#
# 1. makes certificates (the webhook's with deploy/kubernetes/webhook/gen-certs.sh);
# 2. starts etcd and kube-apiserver ($KUBE_APISERVER, e.g. v1.20.2 built from Debian's source
#    package as in docs/webhook.md);
# 3. validates the shipped manifests (the webhook's, and the mirror's disk and S3 variants from
#    deploy/kubernetes/mirror) with a server-side dry run;
# 4. starts the webhook and applies the shipped MutatingWebhookConfiguration, switched to
#    clientConfig.url (there is no kubelet or kube-proxy, so no Service); runs
#    `gen-certs.sh --apply` (Secret + caBundle patch + a re-issued certificate, which the running
#    webhook must pick up without restart);
# 5. creates pods and checks their stored images and annotation; edits the config file and checks
#    the new mapping applies without restart;
# 6. stops the webhook and checks a pod is still created, unchanged (failurePolicy: Ignore).
#
# env: KUBE_APISERVER (required), ETCD (etcd), KUBECTL (kubectl), FERRY_BIN (a `ferry` binary
# with the `webhook` subcommand; default: the crate's `serve` example, built with cargo),
# E2E_PORT_BASE (default 16400: apiserver +43, webhook +44, etcd +79/+80), KEEP=1 keeps the work dir.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KUBE_APISERVER=${KUBE_APISERVER:?set KUBE_APISERVER to a kube-apiserver binary}
ETCD=${ETCD:-etcd}
KUBECTL=${KUBECTL:-kubectl}
BASE=${E2E_PORT_BASE:-16400}
API_PORT=$((BASE + 43)) HOOK_PORT=$((BASE + 44)) ETCD_PORT=$((BASE + 79)) ETCD_PEER=$((BASE + 80))
WORK=$(mktemp -d /tmp/ferry-webhook-e2e.XXXXXX)
PIDS=()
FAILED=0

log() { printf '\n== %s\n' "$*"; }
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; FAILED=1; }
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq $((limit * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for $what" >&2; return 1
}

expect_eq() { # expect_eq DESCRIPTION ACTUAL EXPECTED
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1"; printf '      got:  %s\n      want: %s\n' "$2" "$3"; fi
}

webhook_cmd() {
  if [ -n "${FERRY_BIN:-}" ]; then
    echo "$FERRY_BIN webhook --config"
  else
    (cd "$ROOT" && cargo build -q -p ferry-webhook --example serve) >&2
    local target=${CARGO_TARGET_DIR:-$ROOT/target}
    echo "$target/debug/examples/serve"
  fi
}

log "certificates"
PKI=$WORK/pki && mkdir -p "$PKI"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 2 \
  -subj "/CN=e2e-apiserver-ca" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" -subj "/CN=apiserver" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$PKI/apiserver.ext"
openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
  -out "$PKI/apiserver.crt" -days 2 -extfile "$PKI/apiserver.ext" 2>/dev/null
openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
echo "e2e-admin-token,admin,admin-uid,system:masters" > "$PKI/tokens.csv"
CA_BUNDLE=$("$ROOT/deploy/kubernetes/webhook/gen-certs.sh" --out "$WORK/webhook-tls" --san IP:127.0.0.1 | sed -n 's/^caBundle: //p')

log "etcd and kube-apiserver ($("$KUBE_APISERVER" --version))"
"$ETCD" --name e2e --data-dir "$WORK/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-cluster "e2e=http://127.0.0.1:$ETCD_PEER" \
  > "$WORK/etcd.log" 2>&1 &
PIDS+=($!)
"$KUBE_APISERVER" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" --insecure-port=0 \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --token-auth-file="$PKI/tokens.csv" --authorization-mode=RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range=10.96.0.0/24 \
  --enable-admission-plugins=NamespaceLifecycle,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
  --disable-admission-plugins=ServiceAccount --v=1 > "$WORK/apiserver.log" 2>&1 &
PIDS+=($!)
cat > "$WORK/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: admin
  user: {token: e2e-admin-token}
contexts:
- name: e2e
  context: {cluster: e2e, user: admin, namespace: default}
current-context: e2e
EOF
export KUBECONFIG=$WORK/kubeconfig
k() { "$KUBECTL" "$@" 2> >(grep -v 'version difference' >&2); }
wait_for 90 "kube-apiserver" k get --raw /readyz
wait_for 30 "default namespace" k get namespace default
pass "kube-apiserver ready on 127.0.0.1:$API_PORT"

log "shipped manifests (namespace created, the rest as a server-side dry run)"
DEPLOY=$ROOT/deploy/kubernetes/webhook
k apply -f "$DEPLOY/namespace.yaml"
for f in $(sed -n 's/^  - //p' "$DEPLOY/kustomization.yaml"); do
  [ "$f" = namespace.yaml ] && continue
  if grep -q '^apiVersion: policy/v1$' "$DEPLOY/$f" && ! k api-versions | grep -qx policy/v1; then
    echo "skipped $f: this apiserver has no policy/v1 (Kubernetes < 1.21)"
    continue
  fi
  if k apply --dry-run=server -f "$DEPLOY/$f"; then pass "$f accepted"; else fail "$f rejected"; fi
done

log "mirror manifests (deploy/kubernetes/mirror, disk and S3 variants, server-side dry run)"
# Each rendered object is dry-run on its own, so one kind this old apiserver lacks (policy/v1
# before 1.21, autoscaling/v2 before 1.23) is reported as skipped instead of hiding the rest.
dry_run_rendered() {
  local name=$1 rendered=$2 dir
  dir=$(mktemp -d "$WORK/render.XXXX")
  awk -v d="$dir" '/^---$/ {n++; next} {print > (d "/" sprintf("%03d", n) ".yaml")}' "$rendered"
  for doc in "$dir"/*.yaml; do
    local api kind
    api=$(sed -n 's/^apiVersion: //p' "$doc" | head -1)
    kind=$(sed -n 's/^kind: //p' "$doc" | head -1)
    if ! k api-versions | grep -qx "$api"; then
      echo "skipped $kind ($api): not served by this apiserver"
      continue
    fi
    if [ "$kind" = Namespace ]; then k apply -f "$doc" >/dev/null; continue; fi
    # The preStop `sleep` action is Kubernetes 1.30+ (documented in the manifest and in
    # docs/operations.md); older apiservers reject the field, so check the rest without it.
    if [ "$kind" = Deployment ] && [ "$SERVER_MINOR" -lt 30 ] && grep -q 'preStop:' "$doc"; then
      echo "note: this apiserver is 1.$SERVER_MINOR; checking the $name Deployment without its preStop sleep (1.30+)"
      k patch --local -f "$doc" --type=json -o yaml \
        -p '[{"op":"remove","path":"/spec/template/spec/containers/0/lifecycle"}]' > "$doc.old-k8s"
      mv "$doc.old-k8s" "$doc"
    fi
    if k apply --dry-run=server -f "$doc" >/dev/null; then pass "$name: $kind accepted"; else fail "$name: $kind rejected"; fi
  done
}
MIRROR=$ROOT/deploy/kubernetes/mirror
SERVER_MINOR=$(k version -o json | sed -n '/serverVersion/,$ s/.*"minor": *"\([0-9]*\).*/\1/p' | head -1)
k kustomize "$MIRROR" > "$WORK/mirror.yaml"
dry_run_rendered "mirror (disk)" "$WORK/mirror.yaml"
k kustomize "$MIRROR/s3" > "$WORK/mirror-s3.yaml"
dry_run_rendered "mirror (S3)" "$WORK/mirror-s3.yaml"
dry_run_rendered "mirror (S3) autoscaler" "$MIRROR/s3/hpa.yaml"

log "ferry webhook"
CMD=$(webhook_cmd)
cat > "$WORK/webhook.yaml" <<EOF
listen: 127.0.0.1:$HOOK_PORT
tls: {cert: $WORK/webhook-tls/tls.crt, key: $WORK/webhook-tls/tls.key}
mirror: mirror.example.com
registries:
  quay.io: quay.mirror.example.com
exclude_namespaces: [kube-system, ferry-system]
EOF
echo "command: $CMD $WORK/webhook.yaml"
# shellcheck disable=SC2086
RUST_LOG=info $CMD "$WORK/webhook.yaml" > "$WORK/webhook.log" 2>&1 &
HOOK_PID=$!
PIDS+=("$HOOK_PID")
wait_for 120 "webhook /healthz" curl -sf --cacert "$WORK/webhook-tls/ca.crt" "https://127.0.0.1:$HOOK_PORT/healthz"
pass "webhook healthy on https://127.0.0.1:$HOOK_PORT"

sed -e '/service:/,/port: 443/d' \
    -e "s|^    clientConfig:|    clientConfig:\n      url: https://127.0.0.1:$HOOK_PORT/mutate|" \
    "$DEPLOY/mutatingwebhook.yaml" > "$WORK/mwc.yaml"
k apply -f "$WORK/mwc.yaml"

log "gen-certs.sh --apply: Secret, caBundle, and a new serving certificate picked up live"
serial() { openssl x509 -noout -serial; }
OLD_SERIAL=$(serial < "$WORK/webhook-tls/tls.crt")
KUBECTL=$KUBECTL "$DEPLOY/gen-certs.sh" --out "$WORK/webhook-tls" --san IP:127.0.0.1 --apply 2>&1 | grep -v '^caBundle\|version difference'
NEW_SERIAL=$(serial < "$WORK/webhook-tls/tls.crt")
GOT=$(k get mutatingwebhookconfiguration ferry-webhook -o jsonpath='{.webhooks[0].clientConfig.caBundle}')
expect_eq "caBundle patched with the CA (unchanged by re-issuing)" "$GOT" "$CA_BUNDLE"
GOT=$(k -n ferry-system get secret ferry-webhook-tls -o jsonpath='{.type}')
expect_eq "Secret ferry-webhook-tls created" "$GOT" "kubernetes.io/tls"
presented() { openssl s_client -connect "127.0.0.1:$HOOK_PORT" </dev/null 2>/dev/null | serial; }
serves_new() { [ "$(presented)" = "$NEW_SERIAL" ]; }
if [ "$OLD_SERIAL" != "$NEW_SERIAL" ] && wait_for 10 "the new certificate" serves_new; then
  pass "webhook serves the re-issued certificate without restart ($NEW_SERIAL)"
else
  fail "webhook serves $(presented), want $NEW_SERIAL"
fi
k get mutatingwebhookconfiguration ferry-webhook \
  -o jsonpath='{.webhooks[0].failurePolicy} {.webhooks[0].reinvocationPolicy} {.webhooks[0].clientConfig.url}{"\n"}'

log "pods are rewritten"
k create namespace e2e >/dev/null
k apply -f - <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: e2e
spec:
  initContainers:
  - name: init
    image: busybox:1.36
  containers:
  - name: nginx
    image: nginx:1.25
  - name: app
    image: ghcr.io/someorg/app:1.0@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
  - name: exporter
    image: quay.io/prometheus/node-exporter:v1.8.0
  - name: cached
    image: mirror.example.com/docker.io/library/redis:7
EOF
IMAGES='{range .spec.initContainers[*]}{.name}={.image}{"\n"}{end}{range .spec.containers[*]}{.name}={.image}{"\n"}{end}'
GOT=$(k -n e2e get pod web -o jsonpath="$IMAGES")
echo "$GOT"
expect_eq "init, docker.io, ghcr.io (tag+digest), quay.io override, already mirrored" "$GOT" \
"init=mirror.example.com/docker.io/library/busybox:1.36
nginx=mirror.example.com/docker.io/library/nginx:1.25
app=mirror.example.com/ghcr.io/someorg/app:1.0@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
exporter=quay.mirror.example.com/prometheus/node-exporter:v1.8.0
cached=mirror.example.com/docker.io/library/redis:7"
ANNOTATION=$(k -n e2e get pod web -o jsonpath='{.metadata.annotations.ferry\.dev/original-images}')
echo "ferry.dev/original-images: $ANNOTATION"
expect_eq "original images recorded" "$ANNOTATION" \
  '{"app":"ghcr.io/someorg/app:1.0@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","exporter":"quay.io/prometheus/node-exporter:v1.8.0","init":"busybox:1.36","nginx":"nginx:1.25"}'

GOT=$(k -n e2e run dry --image=alpine:3.20 --dry-run=server -o jsonpath='{.spec.containers[0].image}')
expect_eq "kubectl run --dry-run=server" "$GOT" "mirror.example.com/docker.io/library/alpine:3.20"

k -n e2e run optout --image=nginx:1.25 --annotations=ferry.dev/rewrite=false >/dev/null
GOT=$(k -n e2e get pod optout -o jsonpath='{.spec.containers[0].image}')
expect_eq "opt-out annotation leaves the pod alone" "$GOT" "nginx:1.25"

k -n kube-system run sys --image=nginx:1.25 >/dev/null
GOT=$(k -n kube-system get pod sys -o jsonpath='{.spec.containers[0].image}')
expect_eq "kube-system is excluded" "$GOT" "nginx:1.25"

k -n ferry-system run own --image=nginx:1.25 >/dev/null
GOT=$(k -n ferry-system get pod own -o jsonpath='{.spec.containers[0].image}')
expect_eq "the webhook's own namespace is excluded" "$GOT" "nginx:1.25"

log "config hot reload"
sed -i 's/^mirror: mirror.example.com$/mirror: mirror2.example.com/' "$WORK/webhook.yaml"
sleep 2
k -n e2e run reloaded --image=nginx:1.25 >/dev/null
GOT=$(k -n e2e get pod reloaded -o jsonpath='{.spec.containers[0].image}')
expect_eq "new mirror applies without restart" "$GOT" "mirror2.example.com/docker.io/library/nginx:1.25"

log "webhook down: failurePolicy Ignore"
kill "$HOOK_PID"
wait "$HOOK_PID" 2>/dev/null || true
if curl -sf --cacert "$WORK/webhook-tls/ca.crt" "https://127.0.0.1:$HOOK_PORT/healthz" >/dev/null 2>&1; then
  fail "webhook still answering"
fi
k -n e2e run down --image=nginx:1.25 >/dev/null
GOT=$(k -n e2e get pod down -o jsonpath='{.spec.containers[0].image}')
expect_eq "pod created unchanged while the webhook is down" "$GOT" "nginx:1.25"

log "webhook log (last lines)"
tail -n 12 "$WORK/webhook.log" | sed 's/\x1b\[[0-9;]*m//g'

if [ "$FAILED" = 0 ]; then log "ALL PASSED"; else log "SOME CHECKS FAILED"; exit 1; fi
