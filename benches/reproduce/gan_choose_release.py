#!/usr/bin/env python3
"""Choose the release of a gan_mnist.sh run by the CAS protocol's own rule: best validation.

    python3 benches/reproduce/gan_choose_release.py OUT [--json]

OUT is the folder given to gan_mnist.sh (OUT/synth + OUT/eval.json, the script's release) and to
gan_postprocess.sh (OUT/synth-NAME + OUT/eval-NAME.json, each post-processed release). Every
release is ranked by its best CAS validation accuracy (the accuracy on the last 5,000 real training
images, over the CAS epochs), never by the test figure; ties go to the release listed first (the
script's own release, then the others by name). Prints one line per release, then the chosen one
with its test CAS and the epsilon per accountant from its release.json: accountant, delta,
sampling scheme and each ledger phase's (sampling rate, noise multiplier, steps).

The choice uses validation images that belong to the GAN's private training set; like the CAS
epoch choice of the protocol (DPImageBench 2025), it sits outside the privacy accounting: the
epsilon covers the generator, not the choice among its releases.
"""

import json
import os
import sys


def fail(message):
    print(f"gan_choose_release: {message}", file=sys.stderr)
    sys.exit(2)


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        fail(f"cannot read {path}: {e}")


def releases(out):
    """(name, eval path, synth folder) for the script's release and each post-processed one."""
    found = []
    if os.path.exists(os.path.join(out, "eval.json")):
        found.append(("default", os.path.join(out, "eval.json"), os.path.join(out, "synth")))
    for entry in sorted(os.listdir(out)):
        if entry.startswith("eval-") and entry.endswith(".json"):
            name = entry[len("eval-"):-len(".json")]
            found.append((name, os.path.join(out, entry), os.path.join(out, f"synth-{name}")))
    return found


def main(argv):
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return
    args = [a for a in argv if a != "--json"]
    as_json = "--json" in argv
    if len(args) != 1:
        fail("usage: gan_choose_release.py OUT [--json]")
    out = args[0]
    if not os.path.isdir(out):
        fail(f"{out} is not a folder (give the OUT of gan_mnist.sh)")
    rows = []
    for name, eval_path, synth in releases(out):
        e = load_json(eval_path)
        cas = e.get("cas") or fail(f"{eval_path} has no 'cas' block")
        validation = cas.get("validation_accuracy") or fail(f"{eval_path} has no CAS validation accuracies")
        release = load_json(os.path.join(synth, "release.json"))
        rows.append({
            "release": name,
            "temperature": release.get("temperature"),
            "keep": release.get("keep"),
            "selection": release.get("selection"),
            "validation_size": e.get("config", {}).get("validation_size"),
            "best_validation": max(validation),
            "validation_accuracy": validation,
            "cas_test": cas["test_accuracy"],
            "fid_mnist_classifier": e.get("fid_mnist_classifier"),
            "real_vs_fake_accuracy": e.get("real_vs_fake_accuracy"),
            "release_json": release,
        })
    if not rows:
        fail(f"{out} holds no eval.json or eval-NAME.json: run gan_mnist.sh / gan_postprocess.sh first")
    generators = {r["release_json"].get("generator_sha256") for r in rows}
    if len(generators) != 1:
        fail(f"the releases in {out} come from {len(generators)} different generators; "
             "choose among releases of one trained run only")
    # max() keeps the first of equal keys, so ties go to the release listed first.
    chosen = max(rows, key=lambda r: r["best_validation"])
    release = chosen["release_json"]
    summary = {
        "run": out,
        "rule": (f"best CAS validation accuracy (the last {chosen['validation_size']} real training images); "
                 "test accuracy never used to choose"),
        "chosen": chosen["release"],
        "cas_test": chosen["cas_test"],
        "best_validation": chosen["best_validation"],
        "design": release.get("design"),
        "epsilon_status": release.get("epsilon_status"),
        "epsilon_covers": (f"the generator and the sampling of each release; not this choice among {len(rows)} "
                           "releases, which reads real training images (validation) outside the accounting"),
        "sampling": release.get("sampling"),
        "epsilons": [
            {"accountant": x["accountant"], "epsilon": x["epsilon"], "delta": x["delta"]}
            for x in release.get("epsilons", [])
        ],
        "ledger_steps": release.get("ledger", {}).get("steps"),
        "ledger_phases": release.get("ledger", {}).get("phases"),
        "generator_sha256": release.get("generator_sha256"),
        "releases": [
            {k: v for k, v in r.items() if k != "release_json"} for r in rows
        ],
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    for r in rows:
        mark = "*" if r is chosen else " "
        print(f"{mark} {r['release']:<8} T {r['temperature']:<4} keep {r['keep']:<4} CAS test {r['cas_test']:.4f}  best validation {r['best_validation']:.4f}  "
              f"fid_mnist_classifier {r['fid_mnist_classifier']:.1f}  real-vs-fake {r['real_vs_fake_accuracy']}")
    print(f"chosen (best validation): {chosen['release']}, CAS test {chosen['cas_test']:.4f}")
    print(f"rule: {summary['rule']}")
    print(f"design {summary['design']}; sampling {summary['sampling']}; {summary['ledger_steps']} ledger steps; "
          f"{summary['epsilon_status']}")
    for x in summary["epsilons"]:
        print(f"epsilon {x['epsilon']:.4f} ({x['accountant']} accountant) at delta {x['delta']:g}")
    for p in summary["ledger_phases"] or []:
        print("ledger phase: " + ", ".join(f"{k} {v}" for k, v in p.items()))
    print(f"the epsilon covers {summary['epsilon_covers']}")


if __name__ == "__main__":
    main(sys.argv[1:])
