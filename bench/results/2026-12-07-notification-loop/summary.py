"""Prints the table of the runs beside this file: python3 summary.py"""
import json, glob, os

HERE = os.path.dirname(os.path.abspath(__file__))
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
