#!/bin/bash
# Runs ON the GPU machine, from the carried copy of the project (.gpu/proj), after
# `INSTALL_ONLY=1 bash .gpu/device_run.sh` installed vLLM 0.26 into /tmp/vllm_site.
#   bash benchmarks/gpu/device.sh start SECONDS   smoke (two-engine gateway, 20 requests; SMOKE=0
#                                                 skips it), then start the headline driver
#                                                 detached (PHASES=fcfs,prio,... picks phases,
#                                                 DURATION=30 the seconds each load runs)
#   bash benchmarks/gpu/device.sh wait SECONDS    wait for it (a later call on the warm machine)
# Either way: wait up to SECONDS for the driver's DONE, then pack /tmp/h100 into
# $OUT/h100.tar.gz (a call's limit is 10 minutes; the detached driver outlives the call
# and the next `wait` call picks it up while the machine is still warm).
set -uo pipefail
R=/tmp/h100; mkdir -p "$R"; T0=$(date +%s)
MODEL=$(readlink -f ../dsk7b)
if [ "$1" = start ]; then
  # Run from a copy: a later call re-sends the carried tree, and a process started while
  # that happens finds its working directory gone (run 2's gw2 did).
  rm -rf /tmp/proj_run && cp -r "$PWD" /tmp/proj_run && cd /tmp/proj_run || exit 7
fi
export PYTHONPATH="$PWD:/tmp/vllm_site" VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 \
  TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1 \
  NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
pack() { tar -czf "$OUT/h100.tar.gz" -C "$R" . 2>/dev/null; ls -la "$OUT"; }
if [ "$1" = start ]; then
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader
  if [ "${SMOKE:-1}" != 0 ]; then
    python3 -m benchmarks.gpu_headline --smoke --model "$MODEL" --out "$R/smoke" > "$R/smoke.log" 2>&1
    rc=$?; tail -n 40 "$R/smoke.log"
    if [ $rc != 0 ]; then tail -n 60 "$R"/smoke/*.log; pack; exit $rc; fi
    echo "smoke passed in $(( $(date +%s) - T0 )) s"
  fi
  echo "starting the headline driver"
  setsid nohup python3 -m benchmarks.gpu_headline --model "$MODEL" --out "$R/main" \
    ${PHASES:+--phases $PHASES} ${DURATION:+--duration $DURATION} > "$R/main.log" 2>&1 < /dev/null &
fi
while [ ! -f "$R/main/DONE" ] && [ $(( $(date +%s) - T0 )) -lt "$2" ]; do sleep 5; done
pack
tail -n 30 "$R/main.log"
[ -f "$R/main/DONE" ] && echo "DRIVER DONE" || echo "DRIVER STILL RUNNING after $(( $(date +%s) - T0 )) s"
