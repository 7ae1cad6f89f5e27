#!/usr/bin/env python3
"""thread_cpu.py [COMM...]: one snapshot of where the machine's CPU time went.

Prints one JSON object: the time, the cumulative `cpu` line of /proc/stat
(clock ticks: user nice system idle iowait irq softirq steal ...), the clock
tick rate, the CPU ticks (user + system) of every live thread of every
process whose name is one of COMM, summed by "process/thread" name (ramster's
threads name themselves: "ramster-server/link", "ramster-shim/wb-flusher"),
and those of the processes themselves, summed by name ("procs": these count
threads that have ended too).
The swap suite takes one before and one after each workload run; report.py
subtracts them. A thread that exits between the two is not counted, so the
suite takes them while its backend's processes are up.
"""
import json
import os
import sys
import time


def snapshot(comms):
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    threads = {}
    procs = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                pcomm = f.read().strip()
            if pcomm not in comms:
                continue
            # The process's own line counts its threads that have ended too
            # (a connection's thread lives only as long as its connection).
            with open(f"/proc/{pid}/stat") as f:
                s = f.read()
            fields = s[s.rindex(")") + 2:].split()
            procs[pcomm] = procs.get(pcomm, 0) + int(fields[11]) + int(fields[12])
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    s = f.read()
                name = s[s.index("(") + 1:s.rindex(")")]
                fields = s[s.rindex(")") + 2:].split()  # fields[0] is field 3, state
                ticks = int(fields[11]) + int(fields[12])  # utime, stime
                key = f"{pcomm}/{name}"
                threads[key] = threads.get(key, 0) + ticks
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # the process or thread went away while we read it
    return {"t": time.time(), "hz": os.sysconf("SC_CLK_TCK"), "cpus": os.cpu_count(),
            "cpu": cpu, "threads": threads, "procs": procs}


if __name__ == "__main__":
    comms = set(sys.argv[1:]) or {"ramster-shim", "ramster-server", "nbdkit", "nbdfuse"}
    print(json.dumps(snapshot(comms)))
