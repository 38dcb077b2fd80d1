#!/bin/sh
# Sends two tasks over HTTP, the second depending on the first, and waits for the second.
# Usage: examples/http/send-tasks.sh [base URL]   (default http://127.0.0.1:3000)
set -eu
url=${1:-http://127.0.0.1:${TASK_MANAGER_PORT:-3000}}
curl -sf -X POST "$url/tasks" -H 'Content-Type: application/json' -d '{"id":"example-build","cmd":"sleep 1; echo built"}'
curl -sf -X POST "$url/tasks" -H 'Content-Type: application/json' -d '{"id":"example-report","cmd":"echo reported","dependencies":["example-build"]}'
curl -sf "$url/tasks/example-report/wait?timeout_ms=30000"
