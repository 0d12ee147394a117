# Regenerates fixtures/golden/peer_epsilons.json and fixtures/golden/pld_google.json from the peers'
# accountants, by running peers/peer_epsilon.py once per case (the cases are listed below).
# Run through peers/regenerate_golden.sh, which picks the peers' environment (peers/setup.sh).
# Usage: python peers/regenerate_golden.py OUT_DIR
import datetime, importlib.metadata, json, os, platform, subprocess, sys

OUT = sys.argv[1] if len(sys.argv) > 1 else "fixtures/golden"
HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = "peers/peer_epsilon.py"

# (q, sigma, steps, delta, as written on the command line)
PEER_POINTS = [
    ("0.004266666666666667", "1.1", "10000", "1e-5"),
    ("0.01", "1.0", "1000", "1e-5"),
    ("0.1", "0.8", "100", "1e-5"),
    ("1.0", "5.0", "10", "1e-5"),
    ("0.001", "4.0", "100000", "1e-6"),
    ("0.05", "2.0", "5000", "1e-6"),
    ("0.02", "0.6", "200", "1e-5"),
]
PLD_CASES = [
    ("0.004266666666666667", "1.1", "1000", "1e-5"),
    ("0.004266666666666667", "1.1", "10000", "1e-5"),
    ("0.01", "1.0", "10000", "1e-5"),
    ("0.1", "2.0", "100", "1e-5"),
    ("1.0", "5.0", "10", "1e-5"),
]

cache = {}
def peer(args):
    if args not in cache:
        print("peer_epsilon.py", *args, file=sys.stderr)
        out = subprocess.run([sys.executable, os.path.join(HERE, "peer_epsilon.py"), *args],
                             check=True, capture_output=True, text=True).stdout
        cache[args] = json.loads(out.strip().splitlines()[-1])
    return cache[args]

def version(p):
    return importlib.metadata.version(p)

today = datetime.date.today().isoformat()
points = []
for args in PEER_POINTS:
    r = peer(args)
    points.append({"command": "python " + SCRIPT + " " + " ".join(args),
                   "q": r["q"], "sigma": r["sigma"], "steps": r["steps"], "delta": r["delta"],
                   "opacus_rdp": r["opacus_rdp"], "google_rdp": r["google_rdp"],
                   "opacus_prv": r["opacus_prv"], "google_pld": r["google_pld"]})
peer_epsilons = {
    "description": "Epsilons of the Poisson-subsampled Gaussian (one phase) from the peers' accountants, for "
                   "tests/accounting_rdp.rs. Produced on " + today + " by peers/regenerate_golden.sh, which runs each "
                   "`command` with the Python of peers/setup.sh from the repository root (opacus RDPAccountant with "
                   "its DEFAULT_ALPHAS and PRVAccountant with eps_error 0.01, dp_accounting RdpAccountant with "
                   "DEFAULT_RDP_ORDERS and PLDAccountant with value_discretization_interval 1e-4, add/remove adjacency).",
    "peer_versions": {"opacus": version("opacus"), "dp_accounting": version("dp-accounting"),
                      "prv_accountant": version("prv-accountant"), "torch": version("torch"),
                      "numpy": version("numpy"), "scipy": version("scipy")},
    "points": points,
}

cases = []
for args in PLD_CASES:
    r = peer(args)
    cases.append({"q": r["q"], "sigma": r["sigma"], "steps": r["steps"], "delta": r["delta"],
                  "google_pld": r["google_pld"], "google_rdp": r["google_rdp"]})
pld_google = {
    "description": "Google dp_accounting PLD epsilons for the Poisson-subsampled Gaussian (add/remove), used by "
                   "tests/accounting_pld.rs::pld_matches_google_golden with the rule: ours in "
                   "[google * (1 - 0.005), google * (1 + 0.01)]. Regenerate with peers/regenerate_golden.sh.",
    "command": "python " + SCRIPT + " Q SIGMA STEPS DELTA  (pld.PLDAccountant(value_discretization_interval=1e-4), "
               "SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps))",
    "versions": {"dp-accounting": version("dp-accounting"), "numpy": version("numpy"), "scipy": version("scipy"),
                 "python": platform.python_version()},
    "produced": today,
    "cases": cases,
}

os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "peer_epsilons.json"), "w") as f:
    json.dump(peer_epsilons, f, indent=2); f.write("\n")
# One line per case, as the committed file has it.
with open(os.path.join(OUT, "pld_google.json"), "w") as f:
    head = {k: v for k, v in pld_google.items() if k != "cases"}
    f.write("{\n")
    for k, v in head.items():
        f.write("  " + json.dumps(k) + ": " + json.dumps(v) + ",\n")
    f.write('  "cases": [\n')
    f.write(",\n".join("    " + json.dumps(c) for c in cases))
    f.write("\n  ]\n}\n")
print("wrote", os.path.join(OUT, "peer_epsilons.json"), "and", os.path.join(OUT, "pld_google.json"), file=sys.stderr)
