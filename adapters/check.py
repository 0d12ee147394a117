"""Self-check of the adapters without dpaudit.

Builds dataset folders in the protocol's format (docs/external-trainers.md) from the MNIST fixture
(D = the first N training examples, D' = D plus a canary as its last example, and the canary alone),
runs every adapter once in once mode and (all but the once-only example) through one worker with 3 requests, and checks the
outputs: files exist, parameters and scores finite, claim.json's schema, a malformed request
answered ``ok: false`` without ending the worker, and that plain_dpsgd gives the same model for
the same seed (and a different one for another seed). Then times runs inside one worker.

Usage: .venv/bin/python adapters/check.py [--examples N] [--timing-runs R]
Exit status 0 when every check passes.
"""

import argparse
import gzip
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURE = os.path.join(ROOT, "fixtures", "mnist-small")
PY = sys.executable

# (name, argv prefix, options) of each adapter, with a small recipe.
RECIPE = {"steps": 20, "sample_rate": 0.25, "lot_size": 50, "noise_multiplier": 1.1, "max_grad_norm": 1.0, "lr": 0.5, "delta": 1e-5}
ADAPTERS = [
    ("plain_dpsgd", [PY, os.path.join(HERE, "plain_dpsgd", "train.py")], dict(RECIPE, iterates=True, phases=2, projection_border=3)),
    ("plain_dpsgd no-clip", [PY, os.path.join(HERE, "plain_dpsgd", "train.py")], dict(RECIPE, bug="no-clip")),
    ("opacus", [PY, os.path.join(HERE, "opacus", "train.py")], dict(RECIPE)),
    ("example", [PY, os.path.join(HERE, "example", "train.py")], dict(RECIPE)),
]

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL {what}", file=sys.stderr)


def read_idx_gz(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, = struct.unpack(">I", raw[:4])
    dims = struct.unpack(">" + "I" * (magic & 0xFF), raw[4:4 + 4 * (magic & 0xFF)])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def write_folder(folder, images_u8, labels):
    os.makedirs(folder)
    n, rows, cols = images_u8.shape
    with open(os.path.join(folder, "train-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, rows, cols) + images_u8.tobytes())
    with open(os.path.join(folder, "train-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + labels.astype(np.uint8).tobytes())
    np.save(os.path.join(folder, "x.npy"), images_u8.astype(np.float32) / 255.0)
    np.save(os.path.join(folder, "y.npy"), labels.astype(np.int64))
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({"examples": n, "shape": [rows, cols], "classes": 10}, f)


def make_datasets(root, examples):
    images = read_idx_gz(os.path.join(FIXTURE, "train-images-idx3-ubyte.gz"))[:examples]
    labels = read_idx_gz(os.path.join(FIXTURE, "train-labels-idx1-ubyte.gz"))[:examples]
    rng = np.random.default_rng(0)
    canary = rng.integers(0, 256, size=(1, *images.shape[1:]), dtype=np.uint8)  # out-of-distribution, label 3
    canary_label = np.array([3])
    write_folder(os.path.join(root, "without-canary"), images, labels)
    write_folder(os.path.join(root, "with-canary"), np.concatenate([images, canary]), np.concatenate([labels, canary_label]))
    write_folder(os.path.join(root, "canary"), canary, canary_label)


def request(root, run, side, seed, options):
    out = os.path.join(root, "work", f"run-{run}")
    os.makedirs(out)
    return {"protocol": 1, "run": run, "data": os.path.join(root, "datasets", side), "canary": os.path.join(root, "datasets", "canary"),
            "out": out, "seed": seed, "options": options}


def check_outputs(name, out, wants_claim=True):
    model = os.path.join(out, "model.safetensors")
    check(os.path.exists(model), f"{name}: {model} written")
    if not os.path.exists(model):
        return None
    params = load_file(model)
    check(len(params) > 0 and all(np.isfinite(v).all() for v in params.values()), f"{name}: model parameters finite")
    initial = os.path.join(out, "initial.safetensors")
    if os.path.exists(initial):
        init = load_file(initial)
        check(sorted(init) == sorted(params) and all(init[k].shape == params[k].shape for k in init), f"{name}: initial matches the model's tensors")
    iterates = os.path.join(out, "iterates.safetensors")
    if os.path.exists(iterates):
        its = load_file(iterates)
        check(all(k.startswith("step-") and k.split("/", 1)[1] in params for k in its), f"{name}: iterates named step-NNNNNN/<name>")
        last = max(k.split("/")[0] for k in its)
        check(all(np.array_equal(its[f"{last}/{k}"], params[k]) for k in params), f"{name}: the last iterate is the model")
    with open(os.path.join(out, "scores.json")) as f:
        scores = json.load(f)
    check({"canary-loss", "canary-margin"} <= set(scores) and all(math.isfinite(v) for v in scores.values()), f"{name}: scores.json has finite canary-loss and canary-margin")
    if wants_claim:
        with open(os.path.join(out, "claim.json")) as f:
            claim = json.load(f)
        ok = (isinstance(claim.get("epsilon"), float) and math.isfinite(claim["epsilon"]) and claim["epsilon"] > 0
              and isinstance(claim.get("delta"), float) and 0 < claim["delta"] < 1
              and isinstance(claim.get("accountant"), str) and claim.get("sampling") == "poisson"
              and isinstance(claim.get("library"), str) and isinstance(claim.get("history"), list) and claim["history"]
              and all(set(h) == {"noise_multiplier", "sample_rate", "steps"} and h["noise_multiplier"] > 0
                      and 0 < h["sample_rate"] <= 1 and isinstance(h["steps"], int) and h["steps"] > 0 for h in claim["history"]))
        check(ok, f"{name}: claim.json schema ({claim})")
        return params, claim
    return params, None


def start_worker(argv):
    return subprocess.Popen(argv + ["--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)


def ask(worker, req):
    worker.stdin.write(json.dumps(req) + "\n")
    worker.stdin.flush()
    return json.loads(worker.stdout.readline())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--timing-runs", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        make_datasets(os.path.join(root, "datasets"), args.examples)
        run = 0
        for name, argv, options in ADAPTERS:
            claims = name != "example"
            # Once mode.
            run += 1
            req = request(root, run, "with-canary", 7, options)
            path = os.path.join(req["out"], "request.json")
            with open(path, "w") as f:
                json.dump(req, f)
            t0 = time.time()
            rc = subprocess.run(argv + ["--request", path]).returncode
            print(f"{name}: once mode, one run: {time.time() - t0:.2f} s (process start included)", file=sys.stderr)
            check(rc == 0, f"{name}: once mode exits 0 (got {rc})")
            once = check_outputs(f"{name} once", req["out"], claims)
            if name == "example":  # once mode only
                continue
            # Worker mode: 3 requests, a malformed one in between.
            worker = start_worker(argv)
            outs = []
            for i, (side, seed) in enumerate([("with-canary", 7), ("without-canary", 8), ("with-canary", 9)]):
                run += 1
                req = request(root, run, side, seed, options)
                reply = ask(worker, req)
                check(reply == {"run": run, "ok": True}, f"{name}: worker reply {reply}")
                outs.append(check_outputs(f"{name} worker run {run}", req["out"], claims))
                if i == 0:
                    bad = dict(req, run=-1, options=dict(options, steps="many"))
                    reply = ask(worker, bad)
                    check(reply.get("run") == -1 and reply.get("ok") is False and "steps" in reply.get("error", ""), f"{name}: a bad request is answered ok:false ({reply})")
            if name.startswith("plain_dpsgd") and once and outs[0]:
                same = all(np.array_equal(once[0][k], outs[0][0][k]) for k in once[0])
                check(same, f"{name}: same seed, same model (once vs worker)")
                check(not all(np.array_equal(outs[0][0][k], outs[2][0][k]) for k in once[0]), f"{name}: another seed, another model")
            if claims and once and all(outs):
                check(all(o[1]["epsilon"] == once[1]["epsilon"] for o in outs), f"{name}: the claim agrees across runs and sides")
            # Timing: runs inside the warm worker.
            t0 = time.time()
            for i in range(args.timing_runs):
                run += 1
                reply = ask(worker, request(root, run, "with-canary" if i % 2 else "without-canary", 100 + i, options))
                check(reply.get("ok") is True, f"{name}: timing run {run}: {reply}")
            per_run = (time.time() - t0) / max(1, args.timing_runs)
            worker.stdin.close()
            check(worker.wait(timeout=60) == 0, f"{name}: the worker exits 0 at end of input")
            claim = f", claimed epsilon {once[1]['epsilon']:.3f} ({once[1]['accountant']})" if once and once[1] else ""
            print(f"{name}: worker mode {per_run:.3f} s per run ({args.examples} examples, {options['steps']} steps){claim}")
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
