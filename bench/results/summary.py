"""Prints the tables of the `labrelay-bench --json` runs kept in a results
folder: python3 bench/results/summary.py bench/results/<folder>"""
import json, glob, os, sys

HERE = sys.argv[1] if len(sys.argv) > 1 else "."
def load(p):
    try: return json.load(open(p))
    except Exception as e: return None
print("pipeline (--duration 10, TMPDIR=/dev/shm)")
print(f"{'run':<16}{'ingest/s':>9}{'e2e/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'sys CPU ms/rep':>15}{'bench CPU ms/rep':>17}{'broker peak MiB':>16}{'reports':>9}{'missing':>8}")
for p in sorted(glob.glob(os.path.join(HERE, 'pipeline-*.json'))):
    f=load(p); name=os.path.basename(p)[9:-5]
    if not f: print(name, "no json"); continue
    procs={q['name']:q for q in f['processes']}
    sys_cpu=sum((q['cpu_ms_per_report'] or 0) for n,q in procs.items() if not n.startswith('bench'))
    bench=[q for n,q in procs.items() if n.startswith('bench')][0]
    l=f['latency_ms']['end_to_end']
    print(f"{name:<16}{f['ingest_per_sec']:>9.0f}{f['end_to_end_per_sec']:>8.0f}{l['p50_ms']:>8.2f}{l['p99_ms']:>8.2f}{sys_cpu:>15.3f}{bench['cpu_ms_per_report']:>17.3f}{procs['broker']['peak_rss_mib']:>16.1f}{f['reports_issued']:>9}{f['missing']:>8}")
broker_runs = sorted(glob.glob(os.path.join(HERE, 'broker-*.json')))
if not broker_runs:
    sys.exit(0)
print()
print("broker (--broker --messages 20000 --phases batched,single,push,pull, TMPDIR=/dev/shm)")
print(f"{'run':<14}{'batched/s':>10}{'32x1 gRPC/s':>12}{'push/s':>8}{'pull/s':>8}{'lost':>5}{'dup':>5}{'peak MiB':>9}")
for p in broker_runs:
    f=load(p); name=os.path.basename(p)[7:-5]
    if not f: print(name, "no json"); continue
    print(f"{name:<14}{f['publish_batched_per_sec']:>10.0f}{f['publish_32_clients_per_sec']:>12.0f}{f['push_per_sec']:>8.0f}{f['streaming_pull_per_sec']:>8.0f}{f['push_lost']:>5}{f['push_duplicates']:>5}{f['broker_peak_rss_mib']:>9.1f}")
