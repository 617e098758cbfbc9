#!/usr/bin/env bash
# Makes a CA and a serving certificate for the ferry webhook Service with openssl, prints the
# caBundle, and with --apply stores the pair in the TLS Secret and patches the caBundle into the
# MutatingWebhookConfiguration.
#
# Re-running keeps an existing CA in --out and issues a new serving certificate, so rotation does
# not need a caBundle change; the webhook picks the new Secret contents up without a restart.
# With cert-manager, skip this script: issue a Certificate into the Secret and let its CA
# injector fill caBundle.
#
# usage: gen-certs.sh [--namespace ferry-system] [--service ferry-webhook] [--secret ferry-webhook-tls]
#                     [--webhook ferry-webhook] [--out DIR] [--days 825] [--san IP:10.0.0.1]... [--apply]
set -euo pipefail

NAMESPACE=ferry-system
SERVICE=ferry-webhook
SECRET=ferry-webhook-tls
WEBHOOK=ferry-webhook
OUT=./ferry-webhook-certs
DAYS=825
APPLY=0
EXTRA_SANS=()
KUBECTL=${KUBECTL:-kubectl}

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) NAMESPACE=$2; shift 2 ;;
    --service) SERVICE=$2; shift 2 ;;
    --secret) SECRET=$2; shift 2 ;;
    --webhook) WEBHOOK=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --days) DAYS=$2; shift 2 ;;
    --san) EXTRA_SANS+=("$2"); shift 2 ;;
    --apply) APPLY=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done

command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 1; }
mkdir -p "$OUT"
umask 077
cd "$OUT"

if [ ! -s ca.key ] || [ ! -s ca.crt ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
    -subj "/CN=ferry-webhook-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "created CA $OUT/ca.crt" >&2
fi

SANS="DNS:$SERVICE,DNS:$SERVICE.$NAMESPACE,DNS:$SERVICE.$NAMESPACE.svc,DNS:$SERVICE.$NAMESPACE.svc.cluster.local"
for san in "${EXTRA_SANS[@]}"; do SANS="$SANS,$san"; done
cat > tls.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$SANS
EOF
openssl req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -subj "/CN=$SERVICE.$NAMESPACE.svc" 2>/dev/null
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt -days "$DAYS" \
  -extfile tls.ext 2>/dev/null
rm -f tls.csr
openssl verify -CAfile ca.crt tls.crt >/dev/null
echo "issued $OUT/tls.crt for $SANS" >&2

CA_BUNDLE=$(base64 -w0 < ca.crt)
echo "caBundle: $CA_BUNDLE"

if [ "$APPLY" = 1 ]; then
  "$KUBECTL" -n "$NAMESPACE" create secret tls "$SECRET" --cert=tls.crt --key=tls.key \
    --dry-run=client -o yaml | "$KUBECTL" apply -f -
  "$KUBECTL" patch mutatingwebhookconfiguration "$WEBHOOK" --type=json \
    -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$CA_BUNDLE\"}]"
fi
