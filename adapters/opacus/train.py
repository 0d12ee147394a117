"""Opacus adapter for dpaudit: a PyTorch model trained with Opacus' ``PrivacyEngine.make_private``.

Speaks dpaudit's external-trainer protocol (docs/external-trainers.md) through ../protocol.py:
    python adapters/opacus/train.py --worker          (or --request PATH)

Options: steps, sample_rate, lot_size, noise_multiplier, max_grad_norm, lr, delta (default 1e-5),
model ("logreg" default, or "mlp": one hidden layer of ``hidden`` units, default 32),
accountant (Opacus' name: "prv" is Opacus' default, "rdp", "gdp"),
sampling ("fixed-rate" default, or "opacus-loader").

The claim is Opacus' own: ``PrivacyEngine.get_epsilon(delta)``; ``history`` is its accountant's
history, one entry per (noise multiplier, sample rate, steps) phase; ``library`` "opacus <version>".

How Opacus 1.6.0 sets the sample rate, and why it matters for add/remove adjacency (read in
opacus/privacy_engine.py, make_private, and opacus/data_loader.py):
* With ``poisson_sampling=True`` make_private replaces the loader by
  ``DPDataLoader.from_data_loader``, whose sample rate is ``1 / len(data_loader)``, i.e.
  ``1 / ceil(|D| / batch_size)``: it is derived from the dataset's size. The accountant's hook is
  attached with the same ``sample_rate = 1 / len(data_loader)`` and, for ``loss_reduction="mean"``,
  the optimizer divides the noisy sum by ``expected_batch_size = int(len(dataset) * sample_rate)``.
  For D (200 examples, batch 50) that is q = 1/4 and a divisor of 50; for D' (201 examples) it is
  q = 1/5 and a divisor of 40. Under add/remove adjacency the two sides then run *different*
  mechanisms (and claim different epsilons): the sample rate and the normaliser are functions of
  the private |D|. ``sampling = "opacus-loader"`` reproduces exactly that usage (DataLoader with
  ``batch_size = lot_size``, ``poisson_sampling=True``, ``loss_reduction="mean"``).
* ``sampling = "fixed-rate"`` (the default) keeps Opacus' per-sample clipping, noise and accounting
  but makes the mechanism independent of |D|: the loader is Opacus' own ``DPDataLoader`` with the
  public ``sample_rate`` (each example independently with that probability per step, as in
  ``UniformWithReplacementSampler``), passed with ``poisson_sampling=False`` so that make_private
  keeps it; the accountant's step hook is re-attached with that public rate (make_private would
  use ``1 / len(loader) = 1 / int(1 / sample_rate)``, equal only when 1 / sample_rate is an
  integer); ``loss_reduction="sum"`` (no division by the size-derived ``expected_batch_size``) with
  the learning rate divided by the public ``lot_size`` instead.
Seeds: the model's initialisation, the sampler's generator and Opacus' ``noise_generator`` all come
from the request's seed (``secure_mode=False``; Opacus refuses a seeded generator in secure mode).
"""

import os
import sys

import torch
from torch import nn

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from protocol import RunResult, load_dataset, option, serve  # noqa: E402

import opacus  # noqa: E402  (site-packages; this folder has no opacus module)
from opacus import PrivacyEngine  # noqa: E402
from opacus.data_loader import DPDataLoader  # noqa: E402


def make_model(kind, inputs, classes, hidden):
    if kind == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(inputs, classes))
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, classes))
    raise ValueError(f"options.model {kind!r} is not logreg or mlp")


# Opacus' epsilon by (accountant, history, delta): the same for every run of an audit, and the PRV
# and RDP accountants take longer than the training, so each is computed once per worker.
_EPSILON = {}


def train(request):
    opts = request.get("options", {})
    steps = option(opts, "steps", int)
    lot = option(opts, "lot_size", int)
    sigma = option(opts, "noise_multiplier", float)
    clip = option(opts, "max_grad_norm", float)
    lr = option(opts, "lr", float)
    delta = option(opts, "delta", float, 1e-5)
    accountant = str(opts.get("accountant", "prv"))
    sampling = str(opts.get("sampling", "fixed-rate"))
    if steps < 1 or lot < 1:
        raise ValueError("need steps >= 1 and lot_size >= 1")

    data = load_dataset(request["data"])
    seed = int(request["seed"])
    torch.manual_seed(seed)  # anything Opacus draws from the global generator
    model = make_model(str(opts.get("model", "logreg")), data.flat().shape[1], data.classes, option(opts, "hidden", int, 32))
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dataset = torch.utils.data.TensorDataset(data.x, data.y)
    sample_gen = torch.Generator().manual_seed(seed ^ 0x5A5A5A5A)
    noise_gen = torch.Generator().manual_seed(seed ^ 0x3C3C3C3C)
    engine = PrivacyEngine(accountant=accountant)

    if sampling == "fixed-rate":
        q = option(opts, "sample_rate", float)
        if not 0 < q <= 1:
            raise ValueError("options.sample_rate must be in (0, 1]")
        loader = DPDataLoader(dataset, sample_rate=q, generator=sample_gen)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr / lot)
        model, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma, max_grad_norm=clip,
            poisson_sampling=False, loss_reduction="sum", noise_generator=noise_gen,
        )
        optimizer.attach_step_hook(engine.accountant.get_optimizer_hook_fn(sample_rate=q))
        criterion = nn.CrossEntropyLoss(reduction="sum")
    elif sampling == "opacus-loader":
        loader = torch.utils.data.DataLoader(dataset, batch_size=lot, generator=sample_gen)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        model, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma, max_grad_norm=clip,
            poisson_sampling=True, loss_reduction="mean", noise_generator=noise_gen,
        )
        criterion = nn.CrossEntropyLoss(reduction="mean")
    else:
        raise ValueError(f"options.sampling {sampling!r} is not fixed-rate or opacus-loader")

    done = 0
    while done < steps:
        for xb, yb in loader:
            optimizer.zero_grad()
            criterion(model(xb), yb).backward()
            optimizer.step()
            done += 1
            if done == steps:
                break

    history = [{"noise_multiplier": float(s), "sample_rate": float(r), "steps": int(n)} for s, r, n in engine.accountant.history]
    if sum(h["steps"] for h in history) != steps:
        raise RuntimeError(f"Opacus' accountant recorded {sum(h['steps'] for h in history)} steps, the loop took {steps}")
    key = (engine.accountant.mechanism(), tuple(engine.accountant.history), delta)
    if key not in _EPSILON:
        _EPSILON[key] = float(engine.get_epsilon(delta))
    epsilon = _EPSILON[key]
    claim = {
        "epsilon": epsilon,
        "delta": delta,
        "accountant": engine.accountant.mechanism(),
        "sampling": "poisson",
        "history": history,
        "library": f"opacus {opacus.__version__}",
    }
    module = model._module if hasattr(model, "_module") else model
    final = {k: v.detach().clone() for k, v in module.state_dict().items()}
    module.eval()

    def logits(inputs):
        return module(inputs.float())

    return RunResult(final=final, logits=logits, initial=initial, claim=claim)


if __name__ == "__main__":
    sys.exit(serve(train))
