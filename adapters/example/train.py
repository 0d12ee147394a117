"""Minimal dpaudit adapter (docs/external-trainers.md), once mode: train.py REQUEST.json
Plain DP-SGD on logistic regression; copy it and put your own training in train()."""
import json, os, sys
import numpy as np, torch
from safetensors.torch import save_file

def train(req):
    o, g = req["options"], torch.Generator().manual_seed(req["seed"])
    x = torch.from_numpy(np.load(os.path.join(req["data"], "x.npy"))).flatten(1)
    y = torch.from_numpy(np.load(os.path.join(req["data"], "y.npy")))
    w = torch.zeros(10, x.shape[1]); b = torch.zeros(10)
    q, C, sigma = o["sample_rate"], o["max_grad_norm"], o["noise_multiplier"]
    for _ in range(o["steps"]):
        idx = (torch.rand(len(y), generator=g) < q).nonzero().flatten()   # Poisson sampling
        e = torch.softmax(x[idx] @ w.T + b, 1) - torch.eye(10)[y[idx]]    # per-example: e x^T, e
        norm = e.norm(dim=1) * (x[idx].square().sum(1) + 1).sqrt()
        e = e * (C / norm).clamp(max=1)[:, None]                          # clip to C
        w -= o["lr"] * (e.T @ x[idx] + sigma * C * torch.randn(w.shape, generator=g)) / o["lot_size"]
        b -= o["lr"] * (e.sum(0) + sigma * C * torch.randn(b.shape, generator=g)) / o["lot_size"]
    return w, b

req = json.load(open(sys.argv[-1]))
w, b = train(req)
save_file({"weight": w, "bias": b}, os.path.join(req["out"], "model.safetensors"))
if "query" in req:  # membership inference: the model's logits on every population example
    qx = torch.from_numpy(np.load(os.path.join(req["query"], "x.npy"))).flatten(1)
    np.save(os.path.join(req["out"], "population_logits.npy"), (qx @ w.T + b).double().numpy())
if "canary" in req:  # audits: the canary's loss and margin
    cx = torch.from_numpy(np.load(os.path.join(req["canary"], "x.npy"))).flatten(1)
    cy = int(np.load(os.path.join(req["canary"], "y.npy"))[0])
    logits = (cx @ w.T + b)[0]
    others = torch.cat([logits[:cy], logits[cy + 1:]])
    scores = {"canary-loss": float(torch.logsumexp(logits, 0) - logits[cy]), "canary-margin": float(logits[cy] - others.max())}
    json.dump(scores, open(os.path.join(req["out"], "scores.json"), "w"))
