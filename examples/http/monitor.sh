#!/bin/sh
# Asks for the monitoring data: tasks by state, CPU, memory, disk and GPU.
# Usage: examples/http/monitor.sh [base URL]   (default http://127.0.0.1:3000)
set -eu
url=${1:-http://127.0.0.1:${TASK_MANAGER_PORT:-3000}}
curl -sf "$url/count"
curl -sf "$url/stats"
