"""Run one trial from the shell and print its curve as it goes.

    python -m trainers.run --estimator fogzo --bits 2 --steps 300
    python -m trainers.run --estimator nspsa --lr 1e-3 --opt n=16 --flops 1e8 --json

A user mistake prints one line and exits 2; a diverged trial exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from trainers.config import TrialConfig
from trainers.trial import TrialDiverged, run_trial


def _key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """``["n=4", "eps_mode=fixed"]`` -> ``{"n": 4, "eps_mode": "fixed"}`` (values parsed as
    YAML)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = TrialConfig()
    p = argparse.ArgumentParser(prog="python -m trainers.run", description=__doc__.split("\n")[0])
    p.add_argument("--estimator", default=defaults.estimator, help="ste, nspsa, fogzo, mezo, quzo")
    p.add_argument("--bits", type=int, default=defaults.bits)
    p.add_argument(
        "--quantizer", default=defaults.quantizer, help="none, int, lsq, fp8_e4m3, fp8_e5m2"
    )
    p.add_argument("--model", default=defaults.model)
    p.add_argument("--dataset", default=defaults.dataset)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--optimizer", default=defaults.optimizer)
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="default: the estimator's own (see docs/estimators.md)",
    )
    p.add_argument("--momentum", type=float, default=defaults.momentum)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"step budget (default {defaults.steps} if no --flops)",
    )
    p.add_argument("--flops", type=float, default=None, help="training-FLOP budget")
    p.add_argument("--num-evals", type=int, default=defaults.num_evals)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--device", default=defaults.device)
    p.add_argument(
        "--opt", action="append", default=[], metavar="KEY=VALUE", help="estimator option"
    )
    p.add_argument("--quant-opt", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dataset-opt", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="print one JSON object per evaluation")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrialConfig:
    steps = (
        args.steps if (args.steps is not None or args.flops is not None) else TrialConfig().steps
    )
    return TrialConfig.from_dict(
        {
            "estimator": args.estimator,
            "bits": args.bits,
            "quantizer": args.quantizer,
            "model": args.model,
            "dataset": args.dataset,
            "data_dir": args.data_dir,
            "optimizer": args.optimizer,
            "lr": args.lr,
            "momentum": args.momentum,
            "batch_size": args.batch_size,
            "steps": steps,
            "flops": args.flops,
            "num_evals": args.num_evals,
            "seed": args.seed,
            "device": args.device,
            "estimator_options": _key_values(args.opt, "--opt"),
            "quant_options": _key_values(args.quant_opt, "--quant-opt"),
            "model_options": _key_values(args.model_opt, "--model-opt"),
            "dataset_options": _key_values(args.dataset_opt, "--dataset-opt"),
        }
    )


def _print_row(metrics: dict[str, Any]) -> None:
    if metrics["step"] == 0:
        print(
            f"{'step':>7} {'flops':>11} {'forwards':>9} {'wall_s':>8} {'train_loss':>10} "
            f"{'eval_loss':>9} {'accuracy':>8}"
        )
    print(
        f"{metrics['step']:>7} {metrics['flops']:>11.3e} {metrics['forwards']:>9} "
        f"{metrics['wall_s']:>8.2f} {metrics['train_loss']:>10.4f} {metrics['eval_loss']:>9.4f} "
        f"{metrics['eval_metric']:>8.4f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
        run_trial(config, (lambda m: print(json.dumps(m), flush=True)) if args.json else _print_row)
    except TrialDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError) as err:  # config, dataset, device mistakes
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
