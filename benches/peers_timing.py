# Times the peers' accountants on one mechanism, for benches/compare_accountants.sh.
# Prints one JSON line: epsilon and median seconds per call for Google's dp_accounting RDP (compose +
# get_epsilon, and get_epsilon alone on an already composed curve) and PLD
# (value_discretization_interval=1e-4, as in peers/peer_epsilon.py) and Opacus' RDP.
# Usage: python peers_timing.py Q SIGMA STEPS DELTA REPEATS
import json, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
import logging
logging.disable(logging.WARNING)
from dp_accounting import dp_event, rdp, pld
from opacus.accountants import RDPAccountant

q, s, T, d, reps = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
ev = dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(s)), T)

def google_rdp():
    acc = rdp.RdpAccountant(); acc.compose(ev); return acc.get_epsilon(d)
_composed = rdp.RdpAccountant(); _composed.compose(ev)
def google_rdp_conversion_only():
    # get_epsilon on an accountant whose RDP curve is already composed: the conversion alone.
    return _composed.get_epsilon(d)
def google_pld():
    acc = pld.PLDAccountant(value_discretization_interval=1e-4); acc.compose(ev); return acc.get_epsilon(d)
def opacus_rdp():
    a = RDPAccountant(); a.history = [(s, q, T)]; return a.get_epsilon(d)

def timed(f, inner):
    eps = f()  # warm-up (imports, caches)
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            f()
        t.append((time.perf_counter() - t0) / inner)
    return eps, statistics.median(t)

out = {"q": q, "sigma": s, "steps": T, "delta": d}
for name, f, inner in [("google_rdp", google_rdp, 20), ("google_rdp_conversion_only", google_rdp_conversion_only, 200), ("opacus_rdp", opacus_rdp, 20), ("google_pld", google_pld, 1)]:
    eps, sec = timed(f, inner)
    out[name] = {"epsilon": eps, "seconds": sec}
print(json.dumps(out))
