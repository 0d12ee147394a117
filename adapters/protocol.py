"""Shared helper for dpaudit's external-trainer adapters (docs/external-trainers.md).

An adapter supplies one function, ``train(request) -> RunResult``; ``serve(train)`` does the rest:

* ``--request PATH`` (once mode): read one request, train, write the outputs, exit 0 (non-zero on error);
* ``--worker``: one JSON request per line on stdin, one reply line on stdout
  (``{"run": N, "ok": true}`` or ``{"run": N, "ok": false, "error": "..."}``). A Python exception
  in one run becomes an ``ok: false`` reply and the worker serves the next request. Everything
  except replies (prints, warnings, C-level writes to fd 1) goes to stderr.

What it writes in the request's ``out`` folder: ``model.safetensors``, ``initial.safetensors``,
``iterates.safetensors`` (when the adapter kept them, tensors ``step-000001/<name>``...),
``scores.json`` (the canary's loss and margin on the final model, from the request's ``canary``
folder, when the request has one) and ``claim.json`` (when the adapter makes a claim). When the
request names a ``query`` folder (membership inference), ``population_logits.npy``: the final
model's logits on the query folder's examples, float64 ``[n, classes]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from safetensors.torch import save_file

PROTOCOL_VERSION = 1
Tensors = Dict[str, torch.Tensor]


@dataclass
class Dataset:
    """One dataset folder: ``x`` float32 ``[n, rows, cols]`` in [0, 1], ``y`` int64 ``[n]``."""

    x: torch.Tensor
    y: torch.Tensor
    classes: int

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def flat(self) -> torch.Tensor:
        """The inputs as ``[n, rows * cols]``."""
        return self.x.reshape(len(self), -1)


def load_dataset(folder: str) -> Dataset:
    """Reads ``x.npy``, ``y.npy`` and ``dataset.json`` of a dataset folder and checks they agree."""
    with open(os.path.join(folder, "dataset.json")) as f:
        meta = json.load(f)
    x = np.load(os.path.join(folder, "x.npy"), allow_pickle=False)
    y = np.load(os.path.join(folder, "y.npy"), allow_pickle=False)
    n = int(meta["examples"])
    shape = tuple(int(s) for s in meta["shape"])
    classes = int(meta["classes"])
    if x.shape != (n, *shape) or y.shape != (n,):
        raise ValueError(f"{folder}: x.npy {x.shape} / y.npy {y.shape} disagree with dataset.json ({n} examples of {shape})")
    if n > 0 and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{folder}: a label outside 0..{classes - 1}")
    return Dataset(torch.from_numpy(x.astype(np.float32, copy=False)), torch.from_numpy(y.astype(np.int64, copy=False)), classes)


@dataclass
class RunResult:
    """What one training run produced."""

    final: Tensors  # the final parameters
    logits: Callable[[torch.Tensor], torch.Tensor]  # x [n, rows, cols] -> logits [n, classes] of the final model
    initial: Optional[Tensors] = None  # the parameters before the first step
    iterates: Optional[List[Tensors]] = None  # the parameters after each step
    claim: Optional[dict] = None  # claim.json, or None
    scores: Dict[str, float] = field(default_factory=dict)  # further trainer statistics


def option(options: dict, name: str, kind, default=None):
    """``options[name]`` converted to ``kind``; ``default`` when absent (None: required)."""
    if name not in options:
        if default is None:
            raise ValueError(f"options.{name} is required")
        return default
    value = options[name]
    if kind in (int, float) and isinstance(value, bool):
        raise ValueError(f"options.{name} must be a number, got {value!r}")
    if kind is int and not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        raise ValueError(f"options.{name} must be an integer, got {value!r}")
    return kind(value)


def canary_scores(result: RunResult, canary: Dataset) -> Dict[str, float]:
    """The canary's cross-entropy loss and margin (its label's logit minus the largest other logit)."""
    if len(canary) != 1:
        raise ValueError(f"the canary folder holds {len(canary)} examples, expected 1")
    with torch.no_grad():
        logits = result.logits(canary.x).double()[0]
    label = int(canary.y[0])
    loss = float(torch.logsumexp(logits, 0) - logits[label])
    others = torch.cat([logits[:label], logits[label + 1:]])
    margin = float(logits[label] - others.max())
    return {"canary-loss": loss, "canary-margin": margin}


def _save(tensors: Tensors, path: str) -> None:
    for name, t in tensors.items():
        if not torch.isfinite(t).all():
            raise ValueError(f"{os.path.basename(path)}: tensor {name} is not finite")
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}, path)


def _write_json(obj: dict, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def _write_logits(result: RunResult, query: Dataset, path: str, batch: int = 4096) -> None:
    """The final model's logits on every example of ``query``, float64 ``[n, classes]``."""
    with torch.no_grad():
        parts = [result.logits(query.x[i:i + batch]).double() for i in range(0, len(query), batch)]
    logits = torch.cat(parts).numpy() if parts else np.zeros((0, query.classes))
    if logits.shape != (len(query), query.classes) or not np.isfinite(logits).all():
        raise ValueError(f"population logits: shape {logits.shape} (expected {(len(query), query.classes)}) or non-finite values")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(logits, dtype="<f8"), allow_pickle=False)
    os.replace(tmp, path)


def handle(request: dict, train: Callable[[dict], RunResult]) -> None:
    """Runs one request: trains and writes every output file into ``request["out"]``."""
    if request.get("protocol") != PROTOCOL_VERSION:
        raise ValueError(f"protocol {request.get('protocol')!r} is not supported (this adapter speaks {PROTOCOL_VERSION})")
    for key in ("data", "out", "seed"):
        if key not in request:
            raise ValueError(f"the request has no {key!r}")
    out = request["out"]
    os.makedirs(out, exist_ok=True)
    result = train(request)
    scores = dict(result.scores)
    if "canary" in request:
        scores.update(canary_scores(result, load_dataset(request["canary"])))
    for name, value in scores.items():
        if not math.isfinite(value):
            raise ValueError(f"score {name} is not finite ({value})")
    if result.initial is not None:
        _save(result.initial, os.path.join(out, "initial.safetensors"))
    if result.iterates:
        _save(
            {f"step-{t:06d}/{name}": v for t, params in enumerate(result.iterates, 1) for name, v in params.items()},
            os.path.join(out, "iterates.safetensors"),
        )
    _write_json(scores, os.path.join(out, "scores.json"))
    if result.claim is not None:
        _write_json(result.claim, os.path.join(out, "claim.json"))
    if "query" in request:
        _write_logits(result, load_dataset(request["query"]), os.path.join(out, "population_logits.npy"))
    # The model last: a run with model.safetensors has every other file too.
    _save(result.final, os.path.join(out, "model.safetensors"))


def _worker(train: Callable[[dict], RunResult]) -> int:
    # Replies go to a private copy of stdout; fd 1 and sys.stdout then point at stderr, so no
    # print (Python or C) can corrupt the reply stream.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        run = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request must be a JSON object")
            run = request.get("run")
            handle(request, train)
            reply = {"run": run, "ok": True}
        except Exception as e:  # one failed run must not end the worker
            traceback.print_exc(file=sys.stderr)
            reply = {"run": run, "ok": False, "error": traceback.format_exception_only(type(e), e)[-1].strip()}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


def serve(train: Callable[[dict], RunResult], argv: Optional[List[str]] = None) -> int:
    """Command-line entry point of an adapter: ``--request PATH`` (once) or ``--worker``."""
    parser = argparse.ArgumentParser(description="dpaudit external-trainer adapter (docs/external-trainers.md)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--request", metavar="PATH", help="once mode: train the run this request.json describes")
    mode.add_argument("--worker", action="store_true", help="worker mode: JSON requests on stdin, replies on stdout")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # dpaudit runs several workers side by side
    if args.worker:
        return _worker(train)
    with open(args.request) as f:
        request = json.load(f)
    handle(request, train)
    return 0
