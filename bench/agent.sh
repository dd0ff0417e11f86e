#!/usr/bin/env bash
# driver-agent Attach/Detach latency vs ip -batch, 200 sandboxes (release build; needs root).
cd "$(dirname "$0")/.." && exec cargo bench -p driver-agent --bench attach "$@"
