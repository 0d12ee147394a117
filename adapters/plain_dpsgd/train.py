"""Plain-PyTorch DP-SGD (no Opacus in training) with switchable planted bugs, for dpaudit.

Speaks dpaudit's external-trainer protocol (docs/external-trainers.md) through ../protocol.py:
    python adapters/plain_dpsgd/train.py --worker          (or --request PATH)

Model: multinomial logistic regression on the flattened image. Per step: Poisson sampling (each
example independently with probability ``sample_rate``), exact per-example gradients, each clipped
to ``max_grad_norm`` C, Gaussian noise N(0, (noise_multiplier * C)^2) added to the clipped sum,
divided by the expected lot size ``lot_size``, one SGD step with ``lr``. All randomness comes from
the request's seed.

Add/remove adjacency: ``sample_rate`` and ``lot_size`` are public options, never derived from the
size of the dataset folder (D and D' differ in size by one; a q computed as lot_size / n would
differ between the two sides, and so would the claim).

Options: steps, sample_rate, lot_size, noise_multiplier, max_grad_norm, lr, delta (default 1e-5),
iterates (default false: write iterates.safetensors), bug (default "none"):
  none                      the correct mechanism
  no-clip                   the clipping factor is computed but never applied
  noise-mean-divided-twice  noise is scaled for the mean (divided by the lot size) and the noisy
                            sum is then divided by the lot size again
  fewer-steps-accounted     the accountant is stepped once per epoch (1 / sample_rate steps)
                            instead of once per step
  sample-rate-misreported   the lot is processed as 4 accumulated micro-batches and the history
                            records the micro-batch's rate (sample_rate / 4) instead of the lot's
The claim: epsilon from the history with Opacus' RDP accountant, sampling "poisson".
"""

import functools
import math
import os
import sys

import torch

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from protocol import RunResult, load_dataset, option, serve  # noqa: E402

BUGS = ("none", "no-clip", "noise-mean-divided-twice", "fewer-steps-accounted", "sample-rate-misreported")
ACCUMULATION = 4  # micro-batches per lot in the sample-rate-misreported bug


@functools.lru_cache(maxsize=64)
def rdp_epsilon(history, delta):
    """Opacus' RDP epsilon of ``history``, a tuple of (noise multiplier, sample rate, steps).

    Cached: it takes longer than the training itself and is the same for every run of an audit.
    """
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta))


def clipped_gradient_sum(w, b, x, y, clip, apply_clip):
    """The sum over the rows of ``x`` of each example's cross-entropy gradient, clipped to norm ``clip``.

    For logistic regression the gradient of example i is e_i x_i^T (weights) and e_i (bias) with
    e_i = softmax(W x_i + b) - onehot(y_i), so its norm is |e_i| sqrt(|x_i|^2 + 1).
    """
    logits = x @ w.T + b
    e = torch.softmax(logits, dim=1)
    e[torch.arange(len(y)), y] -= 1.0
    norms = e.norm(dim=1) * torch.sqrt((x * x).sum(dim=1) + 1.0)
    factor = torch.clamp(clip / (norms + 1e-12), max=1.0)
    if apply_clip:
        e = e * factor[:, None]
    return e.T @ x, e.sum(dim=0)


def train(request):
    opts = request.get("options", {})
    steps = option(opts, "steps", int)
    q = option(opts, "sample_rate", float)
    lot = option(opts, "lot_size", float)
    sigma = option(opts, "noise_multiplier", float)
    clip = option(opts, "max_grad_norm", float)
    lr = option(opts, "lr", float)
    delta = option(opts, "delta", float, 1e-5)
    keep_iterates = bool(opts.get("iterates", False))
    bug = opts.get("bug", "none")
    if bug not in BUGS:
        raise ValueError(f"options.bug {bug!r} is not one of {', '.join(BUGS)}")
    if not (0 < q <= 1) or lot <= 0 or sigma <= 0 or clip <= 0 or steps < 1:
        raise ValueError("need 0 < sample_rate <= 1, lot_size > 0, noise_multiplier > 0, max_grad_norm > 0, steps >= 1")

    data = load_dataset(request["data"])
    x, y = data.flat().double(), data.y
    n, d = x.shape
    g = torch.Generator().manual_seed(int(request["seed"]))
    bound = 1.0 / math.sqrt(d)
    w = (torch.rand(data.classes, d, generator=g, dtype=torch.float64) * 2 - 1) * bound
    b = (torch.rand(data.classes, generator=g, dtype=torch.float64) * 2 - 1) * bound
    initial = {"weight": w.clone(), "bias": b.clone()}
    iterates = [] if keep_iterates else None

    accounted_steps = 0
    steps_per_epoch = max(1, round(1 / q))
    for t in range(steps):
        lot_mask = torch.rand(n, generator=g, dtype=torch.float64) < q
        idx = lot_mask.nonzero().flatten()
        if bug == "sample-rate-misreported":
            # Gradient accumulation: the lot in ACCUMULATION micro-batches, summed (same update).
            gw, gb = torch.zeros_like(w), torch.zeros_like(b)
            for part in torch.tensor_split(idx, ACCUMULATION):
                pw, pb = clipped_gradient_sum(w, b, x[part], y[part], clip, True)
                gw, gb = gw + pw, gb + pb
        else:
            gw, gb = clipped_gradient_sum(w, b, x[idx], y[idx], clip, bug != "no-clip")
        std = sigma * clip
        if bug == "noise-mean-divided-twice":
            std = sigma * clip / lot  # the noise of the *mean* gradient ...
        gw = (gw + std * torch.randn(w.shape, generator=g, dtype=torch.float64)) / lot  # ... divided again here
        gb = (gb + std * torch.randn(b.shape, generator=g, dtype=torch.float64)) / lot
        w = w - lr * gw
        b = b - lr * gb
        if iterates is not None:
            iterates.append({"weight": w.clone(), "bias": b.clone()})
        if bug == "fewer-steps-accounted":
            if (t + 1) % steps_per_epoch == 0:  # the accountant stepped in the epoch loop
                accounted_steps += 1
        else:
            accounted_steps += 1

    reported_q = q / ACCUMULATION if bug == "sample-rate-misreported" else q
    history = [{"noise_multiplier": sigma, "sample_rate": reported_q, "steps": accounted_steps}] if accounted_steps else []
    epsilon = rdp_epsilon(tuple((h["noise_multiplier"], h["sample_rate"], h["steps"]) for h in history), delta) if history else 0.0
    claim = {
        "epsilon": epsilon,
        "delta": delta,
        "accountant": "rdp",
        "sampling": "poisson",
        "history": history,
        "library": "adapters/plain_dpsgd (accountant: opacus.accountants.RDPAccountant)",
    }

    def logits(inputs):
        return inputs.reshape(len(inputs), -1).double() @ w.T + b

    return RunResult(final={"weight": w, "bias": b}, logits=logits, initial=initial, iterates=iterates, claim=claim)


if __name__ == "__main__":
    sys.exit(serve(train))
