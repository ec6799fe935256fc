#!/bin/sh
# One-shot initialisation of Garage for Rondo; safe to run again. It gives the node its role
# in the layout, imports the platform's S3 key (RONDO_S3_ACCESS_KEY / RONDO_S3_SECRET_KEY:
# Garage wants "GK" + 24 hex digits and 64 hex digits), lets that key create buckets, and
# creates the platform bucket. The garage CLI reaches the node through /etc/garage.toml
# (rpc_public_addr) and the node's id in the metadata volume, mounted read-only.
set -eu

until garage status >/dev/null 2>&1; do
  echo "waiting for Garage..."
  sleep 1
done

if garage status | grep -q "NO ROLE ASSIGNED"; then
  node=$(garage node id -q | cut -d@ -f1)
  garage layout assign -z "${GARAGE_ZONE:-dc1}" -c "${GARAGE_CAPACITY:-100G}" "$node"
  garage layout apply --version 1
fi

garage key info "$RONDO_S3_ACCESS_KEY" >/dev/null 2>&1 \
  || garage key import --yes -n rondo-platform "$RONDO_S3_ACCESS_KEY" "$RONDO_S3_SECRET_KEY"
garage key allow --create-bucket "$RONDO_S3_ACCESS_KEY"

garage bucket info "$RONDO_PLATFORM_BUCKET" >/dev/null 2>&1 \
  || garage bucket create "$RONDO_PLATFORM_BUCKET"
garage bucket allow --read --write --owner "$RONDO_PLATFORM_BUCKET" --key "$RONDO_S3_ACCESS_KEY"
echo "Garage ready: bucket $RONDO_PLATFORM_BUCKET, key $RONDO_S3_ACCESS_KEY"
