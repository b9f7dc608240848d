#!/usr/bin/env bash
# Placeholder: the benchmark is not written yet.
echo "[bench] no benchmark yet (placeholder); nothing to run"
exit 0
