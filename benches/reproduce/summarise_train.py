#!/usr/bin/env python3
"""Prints one line per dpaudit train run folder (metrics.json): test and validation accuracy,
epsilon per accountant, steps, wall time of the last invocation; and whether it meets the issue's
bar (accuracy >= BAR at epsilon <= EPS by every accountant). Usage: summarise_train.py BAR EPS RUN
[SCRIPT_WALL_SECONDS]."""
import json
import sys

bar, eps_max, run = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
wall = sys.argv[4] if len(sys.argv) > 4 else None
m = json.load(open(f"{run}/metrics.json"))
eps = {e["accountant"]: e["epsilon"] for e in m["epsilons"]}
delta = m["epsilons"][0]["delta"] if m["epsilons"] else None
val = m.get("validation_accuracy")
print(f"run: {run}")
print(f"  model {m['config']['model']}, {m['train_examples']} training examples, {m['validation_examples']} held out for validation")
print(f"  test accuracy       {m['test_accuracy']:.4f}")
print(f"  validation accuracy {val:.4f}" if val is not None else "  validation accuracy (none held out)")
for name in ("rdp", "pld"):
    if name in eps:
        print(f"  epsilon ({name.upper()})      {eps[name]:.4f} at delta {delta:g}")
print(f"  sigma {m['config']['noise_multiplier']:.4f}, q {m['sampling_rate']:.6f}, {m['steps']} DP-SGD steps, phases {[(p['sampling_rate'], p['noise_multiplier'], p['steps']) for p in m['phases']]}")
if m.get("pca"):
    p = m["pca"]
    print(f"  DP-PCA: {p['dims']} dimensions, sigma_p {p['noise_multiplier']} ({p['source']}{', whitened' if p.get('whitened') else ''})")
print(f"  wall: {m['wall_seconds']:.0f} s (last dpaudit train invocation)" + (f", {wall} s (whole script)" if wall else ""))
ok = m["test_accuracy"] >= bar and eps and max(eps.values()) <= eps_max + 1e-9
print(f"  bar (test accuracy >= {bar} at epsilon <= {eps_max}): {'met' if ok else 'NOT met'}")
