# Opacus DP-SGD against non-private training throughput on this CPU, on the model of benches/per_example.rs
# (the tanh CNN of Papernot et al. 2021 for MNIST), lot 256, samples per second.
# Modes are interleaved over several rounds and the median is reported, since shared machines are noisy.
# Usage (environment from peers/setup.sh): .peers-venv/bin/python peers/opacus_throughput.py [THREADS] [ROUNDS]
import json, statistics, sys, time, warnings
import torch, torch.nn as nn
warnings.filterwarnings("ignore")
from opacus import PrivacyEngine

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
torch.set_num_threads(threads); torch.manual_seed(0)
B, STEPS, WARMUP = 256, 20, 3

def tanh_cnn():
    return nn.Sequential(nn.Conv2d(1, 16, 8, 2, padding=3), nn.Tanh(), nn.MaxPool2d(2, 1),
                         nn.Conv2d(16, 32, 4, 2), nn.Tanh(), nn.MaxPool2d(2, 1), nn.Flatten(),
                         nn.Linear(32 * 4 * 4, 32), nn.Tanh(), nn.Linear(32, 10))

X = torch.rand(B * (STEPS + WARMUP), 1, 28, 28); Y = torch.randint(0, 10, (len(X),))
data = torch.utils.data.TensorDataset(X, Y)

def build(mode):
    model = tanh_cnn(); opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(data, batch_size=B)
    crit = nn.CrossEntropyLoss()
    if mode == "nonprivate":
        return model, opt, loader, crit
    kw = dict(module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.1, max_grad_norm=1.0,
              grad_sample_mode=mode, poisson_sampling=False)
    if mode == "ghost":
        model, opt, crit, loader = PrivacyEngine().make_private(criterion=crit, **kw)
        return model, opt, loader, crit
    model, opt, loader = PrivacyEngine().make_private(**kw)
    return model, opt, loader, crit

def throughput(mode):
    model, opt, loader, crit = build(mode)
    n, t0 = 0, None
    for i, (x, y) in enumerate(loader):
        if i == WARMUP: t0 = time.perf_counter(); n = 0
        opt.zero_grad(); crit(model(x), y).backward(); opt.step(); n += len(x)
    return n / (time.perf_counter() - t0)

modes = ["nonprivate", "hooks", "functorch", "ew", "ghost"]
samples = {m: [] for m in modes}
for _ in range(rounds):
    for m in modes:
        try: samples[m].append(throughput(m))
        except Exception as e: samples[m].append(float("nan")); print(m, "failed:", str(e)[:100], file=sys.stderr)
med = {m: statistics.median(v) for m, v in samples.items()}
out = {"threads": threads, "rounds": rounds, "lot": B, "samples_per_second_median": med,
       "ratio_to_nonprivate": {m: med[m] / med["nonprivate"] for m in modes}}
print(json.dumps(out))
