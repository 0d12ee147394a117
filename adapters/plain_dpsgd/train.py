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
phases (default 1) and lr_decay (default 1), micro_batches (default 1), projection_border
(default 0, below), iterates (default false: write iterates.safetensors), bug (default "none"):
  none                      the correct mechanism
  no-clip                   the clipping factor is computed but never applied
  noise-mean-divided-twice  noise is scaled for the mean (divided by the lot size) and the noisy
                            sum is then divided by the lot size again
  fewer-steps-accounted     training runs in ``phases`` equal phases (the learning rate times
                            ``lr_decay`` after each); each phase *replaces* the history with its
                            own entry instead of appending it, so only the last phase is accounted
  sample-rate-misreported   the lot is processed as ``micro_batches`` (default 8) accumulated
                            micro-batches and the history records a micro-batch's rate
                            (sample_rate / micro_batches) instead of the lot's
scores.json: the canary's loss and margin on the final model, and white-box statistics of the
canary: z_t, the noisy clipped sum of step t projected on the canary's unit gradient direction at
that step (or its part on the pixels within ``projection_border`` of the edge), in units of C;
``canary-projection-sum`` (sum of z_t), ``canary-projection-max`` and
``canary-llr`` (sum of log(1 - q + q exp((s_t z_t - s_t^2 / 2) / sigma^2)), with s_t the clipped
canary gradient's length along the direction in units of C: the Poisson-subsampled Gaussian
likelihood ratio were the canary alone in its direction).
The claim: epsilon from the history with Opacus' RDP accountant, sampling "poisson".
A membership-inference request (no ``canary``, a ``query`` folder) gets no canary statistics;
../protocol.py writes ``population_logits.npy``.
"""

import functools
import math
import os
import sys

import torch

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from protocol import RunResult, load_dataset, option, serve  # noqa: E402

BUGS = ("none", "no-clip", "noise-mean-divided-twice", "fewer-steps-accounted", "sample-rate-misreported")


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
    phases = option(opts, "phases", int, 1)
    lr_decay = option(opts, "lr_decay", float, 1.0)
    micro_batches = option(opts, "micro_batches", int, 8 if opts.get("bug") == "sample-rate-misreported" else 1)
    bug = opts.get("bug", "none")
    if bug not in BUGS:
        raise ValueError(f"options.bug {bug!r} is not one of {', '.join(BUGS)}")
    if not (0 < q <= 1) or lot <= 0 or sigma <= 0 or clip <= 0 or steps < 1:
        raise ValueError("need 0 < sample_rate <= 1, lot_size > 0, noise_multiplier > 0, max_grad_norm > 0, steps >= 1")
    if not 1 <= phases <= steps or micro_batches < 1:
        raise ValueError("need 1 <= phases <= steps and micro_batches >= 1")

    data = load_dataset(request["data"])
    x, y = data.flat().double(), data.y
    n, d = x.shape
    g = torch.Generator().manual_seed(int(request["seed"]))
    bound = 1.0 / math.sqrt(d)
    w = (torch.rand(data.classes, d, generator=g, dtype=torch.float64) * 2 - 1) * bound
    b = (torch.rand(data.classes, generator=g, dtype=torch.float64) * 2 - 1) * bound
    initial = {"weight": w.clone(), "bias": b.clone()}
    iterates = [] if keep_iterates else None

    # White-box statistics of the canary (the trainer's own scores): at each step, the noisy
    # clipped sum projected on the canary's unit gradient direction at that step, in units of C.
    # With ``projection_border`` = B > 0 the direction keeps only the weights of the pixels within
    # B of the image's edge (a public choice, made in the spec: in MNIST no digit reaches them, so
    # the other examples' gradients hardly project there and the statistic sees the canary alone).
    # A membership-inference request has no canary: no canary statistics then.
    canary = load_dataset(request["canary"]) if "canary" in request else None
    cx, cy = (canary.flat().double(), canary.y) if canary is not None else (None, None)
    border = option(opts, "projection_border", int, 0)
    rows, cols = data.x.shape[1:]
    if not 0 <= 2 * border < min(rows, cols):
        raise ValueError(f"options.projection_border must be in 0..{(min(rows, cols) - 1) // 2}")
    direction_mask = torch.ones(rows, cols, dtype=torch.float64)
    if border:
        direction_mask[border:rows - border, border:cols - border] = 0.0
    direction_mask = direction_mask.flatten()
    projections, shifts = [], []

    # The rate the accountant is told: the lot's, or (the bug) one micro-batch's.
    accounted_rate = q / micro_batches if bug == "sample-rate-misreported" else q
    history = []
    phase_ends = [round(steps * (p + 1) / phases) for p in range(phases)]
    phase_start = 0
    for t in range(steps):
        lot_mask = torch.rand(n, generator=g, dtype=torch.float64) < q
        idx = lot_mask.nonzero().flatten()
        # Gradient accumulation: the lot in micro-batches, their clipped sums added up.
        gw, gb = torch.zeros_like(w), torch.zeros_like(b)
        for part in torch.tensor_split(idx, micro_batches):
            pw, pb = clipped_gradient_sum(w, b, x[part], y[part], clip, bug != "no-clip")
            gw, gb = gw + pw, gb + pb
        if canary is not None:
            cw, cb = clipped_gradient_sum(w, b, cx, cy, clip, False)
            full_norm = math.sqrt(float((cw * cw).sum() + (cb * cb).sum()))
            cw = cw * direction_mask
            if border:
                cb = torch.zeros_like(cb)
            cnorm = math.sqrt(float((cw * cw).sum() + (cb * cb).sum())) + 1e-300
            # The clipped canary's shift along the direction, in units of C.
            shifts.append(cnorm * min(1.0, clip / (full_norm + 1e-300)) / clip)
        std = sigma * clip
        if bug == "noise-mean-divided-twice":
            std = sigma * clip / lot  # the noise of the *mean* gradient ...
        gw = gw + std * torch.randn(w.shape, generator=g, dtype=torch.float64)
        gb = gb + std * torch.randn(b.shape, generator=g, dtype=torch.float64)
        if canary is not None:
            projections.append(float((gw * cw).sum() + (gb * cb).sum()) / (cnorm * clip))
        gw, gb = gw / lot, gb / lot  # ... divided again here
        w = w - lr * gw
        b = b - lr * gb
        if iterates is not None:
            iterates.append({"weight": w.clone(), "bias": b.clone()})
        if t + 1 in phase_ends:  # the end of a phase: account for it, decay the learning rate
            entry = {"noise_multiplier": sigma, "sample_rate": accounted_rate, "steps": t + 1 - phase_start}
            if bug == "fewer-steps-accounted":
                history = [entry]  # replaces the earlier phases' entries
            else:
                history.append(entry)
            phase_start = t + 1
            lr *= lr_decay
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

    scores = {}
    if canary is not None:
        z = torch.tensor(projections, dtype=torch.float64)
        shift = torch.tensor(shifts, dtype=torch.float64)
        llr = torch.log1p(q * torch.expm1((shift * z - shift * shift / 2) / (sigma * sigma))).sum()
        scores = {"canary-projection-sum": float(z.sum()), "canary-projection-max": float(z.max()), "canary-llr": float(llr)}
    return RunResult(final={"weight": w, "bias": b}, logits=logits, initial=initial, iterates=iterates, claim=claim, scores=scores)


if __name__ == "__main__":
    sys.exit(serve(train))
