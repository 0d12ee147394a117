# Prints the epsilon that the peers' accountants give for one Poisson-subsampled Gaussian mechanism
# composed over many steps, so the project's accountants can be compared side by side.
# Usage (environment from peers/setup.sh): .peers-venv/bin/python peers/peer_epsilon.py Q SIGMA STEPS DELTA
# peers/regenerate_golden.sh runs it for every case of fixtures/golden/.
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from opacus.accountants import RDPAccountant, PRVAccountant
from dp_accounting import dp_event, rdp, pld
q, s, T, d = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
r = {"q": q, "sigma": s, "steps": T, "delta": d}
def timed(name, f):
    t0 = time.perf_counter(); r[name] = f(); r[name + "_seconds"] = time.perf_counter() - t0
a = RDPAccountant(); a.history = [(s, q, T)]; timed("opacus_rdp", lambda: a.get_epsilon(d))
p = PRVAccountant(); p.history = [(s, q, T)]; timed("opacus_prv", lambda: p.get_epsilon(d, eps_error=0.01))
ev = dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(s)), T)
def google_rdp():
    acc = rdp.RdpAccountant(); acc.compose(ev); return acc.get_epsilon(d)
def google_pld():
    acc = pld.PLDAccountant(value_discretization_interval=1e-4); acc.compose(ev); return acc.get_epsilon(d)
timed("google_rdp", google_rdp); timed("google_pld", google_pld)
print(json.dumps(r))
