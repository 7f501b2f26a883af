"""The optional SFT stage before round 1 (`init.sft_data`): supervised fine-tuning of model.policy
on prompt/response demonstrations, so that round 0's policy is an SFT model M1 and the base M0 is
kept beside it. CREAM (arXiv 2410.12735, §8 of the research notes) and Self-Rewarding LMs
(arXiv 2401.10020) start from such a model; CREAM's round-1 consistency compares M1 with M0.

It runs through the one trainer (selfplay.distributed.train_policy) with its own loss, the mean
per-token negative log-likelihood of the response (chat template applied, end of turn included):
train.batch_size, optimizer, schedule, LoRA, workers, strategy and model.dtype apply as in a round;
init.epochs and init.lr replace train.epochs and train.lr.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from selfplay.algorithm import Algorithm, PairTensors
from selfplay.records import PreferencePair


def _nll(t: PairTensors, cfg) -> "torch.Tensor":
    return -t.policy_chosen   # per-token average log-prob of the demonstration (average_logprobs forced on)


def _no_pairs(judged, ctx):
    raise RuntimeError("the SFT stage trains on demonstrations, not judged samples")


SFT = Algorithm(name="sft", loss_keys=(), paper="supervised fine-tuning", references=(),
                make_pairs=_no_pairs, loss=_nll)


def load_demonstrations(cfg) -> list[PreferencePair]:
    """init.sft_data's rows as pairs whose `chosen` is the demonstration (`rejected` is a stub: the
    trainer scores pairs, and an empty response costs one token)."""
    from selfplay.data import DataError, open_dataset
    i = cfg.init
    ds = open_dataset(i.sft_data, cfg.data.split, "init.sft_data")
    missing = [c for c in (i.prompt_column, i.response_column) if c not in ds.column_names]
    if missing:
        raise DataError(f"init.sft_data {i.sft_data!r}: no column {missing[0]!r} (columns: {ds.column_names})")
    rows = [(str(a), str(b)) for a, b in zip(ds[i.prompt_column], ds[i.response_column])]
    empty = sum(1 for a, b in rows if not a.strip() or not b.strip())
    if not rows or empty:
        raise DataError(f"init.sft_data {i.sft_data!r}: {empty} empty prompt(s) or response(s) of {len(rows)}")
    return [PreferencePair(prompt=a, chosen=b, rejected="", prompt_id=str(k), chosen_winrate=1.0, rejected_winrate=0.0)
            for k, (a, b) in enumerate(rows)]


def train_sft(base: str, out: Path, cfg, seed: int):
    """Fine-tune `base` on init.sft_data; the HF checkpoint lands in `out`. Returns the TrainResult."""
    from selfplay.distributed import train_policy
    sft_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=cfg.init.epochs, lr=cfg.init.lr),
                                  loss=dataclasses.replace(cfg.loss, average_logprobs=True))
    return train_policy(base, out, load_demonstrations(cfg), {}, sft_cfg, seed, algo=SFT)
