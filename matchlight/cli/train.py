"""``matchlight train``: fit a LightFM model on a data directory's event log.

The model is written as ``DIR/models/VERSION``, where a server on ``DIR``
picks it up; what was fitted, and why these features, is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actors import StoreError
from matchlight.cli.argtypes import positive_int, share
from matchlight.cli.command import Subparsers, add_command, fail


def register(sub: Subparsers) -> None:
    """Add ``train`` to the ``matchlight`` command line."""
    parser = add_command(
        sub,
        "train",
        help="fit a LightFM model on the event log",
        description="Read the event log in DIR (also while a server runs on it), fit a LightFM "
        "hybrid model (event types weighted), and write it as DIR/models/VERSION. A server on "
        "DIR swaps it in within --model-poll seconds without dropping requests. The features "
        "are chosen on held-out data: the latest --holdout share of the positive pairs (by "
        "time) is held out, each candidate (identities only; identities plus item terms and "
        "user tastes at each --term-weights weight, terms on more than half the items left "
        "out) is fitted on the rest and ranks the catalogue for the held-out pairs, and the "
        "best (hit rate at 10; the simpler one within a standard error) is fitted on all the "
        "data. The scores are printed and kept in the artifact's meta.json.",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="data directory")
    parser.add_argument("--epochs", type=positive_int, default=30, help="training epochs")
    parser.add_argument("--components", type=positive_int, default=32, help="embedding dimensions")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--threads", type=positive_int, default=2, help="training threads")
    parser.add_argument(
        "--features",
        choices=("auto", "identity", "identity+terms", "all"),
        default="auto",
        help="auto: choose on held-out data; identity: user and item identities only; "
        "identity+terms: identities plus terms (choosing among --term-weights); all: every "
        "feature at weight 1, common terms included (no held-out fit)",
    )
    parser.add_argument(
        "--term-weights",
        type=term_weights,
        # A string, which argparse converts with term_weights: (0.25, 1.0), shown as given.
        default="0.25,1",
        metavar="W[,W...]",
        help="weights of term features relative to identities to try",
    )
    parser.add_argument(
        "--holdout",
        type=share,
        default=0.1,
        help="latest share of the positive pairs held out to choose the features",
    )
    parser.add_argument(
        "--keep-models",
        type=positive_int,
        default=3,
        metavar="N",
        help="after writing the model, delete older artifacts in DIR/models except the current "
        "one, the N newest and those a record of the decision log still names (so "
        "`matchlight explain` can replay it; the log keeps serve --decision-retention records)",
    )
    parser.set_defaults(func=run)


def term_weights(text: str) -> tuple[float, ...]:
    """``--term-weights``: positive numbers separated by commas."""
    try:
        weights = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.25,1, got {text!r}") from None
    if not all(0.0 < w < float("inf") for w in weights):
        raise argparse.ArgumentTypeError(f"weights must be positive and finite, got {text!r}")
    return weights


def run(args: argparse.Namespace) -> int:
    """Fit and write the model; return the exit status (0 written, 1 failed)."""
    from ranker import ModelError, RankerError, TrainingConfig, prune_models, train

    config = TrainingConfig(
        components=args.components,
        epochs=args.epochs,
        seed=args.seed,
        threads=args.threads,
        features=args.features,
        term_weights=args.term_weights,
        holdout=args.holdout,
    )

    def progress(message: str) -> None:
        print(f"matchlight train: {message}", file=sys.stderr, flush=True)

    try:
        model = train(Path(args.data), config, progress=progress)
    except (StoreError, ModelError) as exc:
        return fail("train", str(exc))
    try:
        deleted = prune_models(args.data, keep=args.keep_models)
    except (RankerError, OSError) as exc:
        progress(f"old models not deleted: {exc}")
    else:
        if deleted:
            progress(f"deleted {len(deleted)} old models no decision names: {', '.join(deleted)}")
    facts = model.facts
    print(
        f"model {model.version}: {facts['users']} users, {facts['items']} items, "
        f"{facts['pairs']} pairs, fitted in {facts['fit_s']} s "
        f"(written to {Path(args.data) / 'models' / model.version})"
    )
    selection = facts.get("selection", {})
    scores = ", ".join(f"{c['name']} {c['hit_at_10']:.4f}" for c in selection.get("candidates", ()))
    print(
        f"features: {facts['features']} ({selection.get('reason', 'pinned')}"
        + (f"; held-out hit@10: {scores}" if scores else "")
        + f"; chosen in {facts['select_s']} s)"
    )
    return 0
