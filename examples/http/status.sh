#!/bin/sh
# Asks for a task's status, then its output alone.
# Usage: examples/http/status.sh ID [base URL]   (default http://127.0.0.1:3000)
set -eu
id=${1:?usage: status.sh ID [base URL]}
url=${2:-http://127.0.0.1:${TASK_MANAGER_PORT:-3000}}
curl -sf "$url/tasks/$id"
curl -sf "$url/tasks/$id/output"
