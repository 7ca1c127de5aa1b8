#!/usr/bin/env bash
# Deletes the kind cluster up.sh created, and with it everything in it.
set -euo pipefail

CLUSTER="${KIND_CLUSTER:-courier-e2e}"
KIND="${KIND:-kind}"

"$KIND" delete cluster --name "$CLUSTER"
