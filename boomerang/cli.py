"""Command line: ``python -m boomerang <command>`` (also installed as ``boomerang``).

Each command parses its arguments into the same config objects and calls the same backend
functions as the dashboard. Bad input ends with one sentence on stderr and exit code 2, never
a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import transformers
from safetensors import SafetensorError

from .core import BoomerangPair, Patched, export_model, layer_numbers
from .errors import BoomerangError
from .eval import block_similarity, evaluate_sizes, similarity_matrix, sweep
from .eval.config import EvalConfig, check_limit
from .io import atomic_write
from .orders import BASELINES, ORDER_NAMES, ORDERS, needs_calibration, prune_teacher, pruning_method, pruning_order
from .orders import build as build_order
from .paths import demo_assets_dir
from .progress import tqdm_progress
from .recipes.demo import TeacherConfig, build_demo
from .recipes.smollm2 import (
    ACC_ITEMS,
    build_smollm2_student,
    format_accuracy,
    smollm2_report,
    write_report,
)
from .threads import configure_threads
from .train import DistillConfig, distill, process_state
from .zoo import NAMED_PAIRS, load_pair, smollm2_dirs

# name -> (add_arguments, run). Each command registers itself below with @command.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register ``run(args) -> int | None`` as the subcommand ``name``."""

    def register(run: Callable):
        COMMANDS[name] = (help, add_arguments, run)
        return run

    return register


def add_pair_arguments(p: argparse.ArgumentParser) -> None:
    """--pair / --teacher / --student / --device, shared by every command that loads a pair."""
    p.add_argument("--pair", help=f"a named pair: {' or '.join(NAMED_PAIRS)}")
    p.add_argument("--teacher", help="teacher folder or hub id")
    p.add_argument("--student", help="student folder or hub id (or, with --pair demo, an ablation)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)")


def pair_from_args(args: argparse.Namespace) -> BoomerangPair:
    """Load the pair named by :func:`add_pair_arguments`' options."""
    if args.pair is None and args.teacher is None and args.student is None:
        args.pair = "demo"
    return load_pair(args.pair, teacher=args.teacher, student=args.student, device=args.device)


def parse_numbers(text: str | None, example: str) -> list[int]:
    """'6,5, 0' -> [6, 5, 0] (a patch sequence, a list of sizes), in one sentence showing ``example`` when bad."""
    try:
        return layer_numbers(text)
    except BoomerangError as e:
        raise BoomerangError(f"{e}; write e.g. {example}.") from None


# ---- info ----------------------------------------------------------------------------------


def _info_args(p: argparse.ArgumentParser) -> None:
    add_pair_arguments(p)


@command("info", "show the mapping: student layer -> teacher block, with parameter counts", _info_args)
def _info(args: argparse.Namespace) -> int:
    pair = pair_from_args(args)
    parts = pair.parts
    t_layers, s_layers = parts.layer_list(pair.teacher), parts.layer_list(pair.student)
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    print(f"pair: {pair.name}   ({type(pair.teacher).__name__})")
    print(f"teacher: {pair.mapping.num_teacher_layers} layers, {pair.teacher.num_parameters():,} params")
    print(f"student: {pair.mapping.num_student_layers} layers, {pair.student.num_parameters():,} params")
    print(f"{'student':>7}  {'teacher block':<16}{'student params':>16}{'block params':>16}")
    for i, block in enumerate(pair.mapping.blocks):
        b = f"{block[0]}" if len(block) == 1 else f"{block[0]}-{block[-1]}"
        block_params = sum(count(t_layers[j]) for j in block)
        print(f"{i:>7}  {b:<16}{count(s_layers[i]):>16,}{block_params:>16,}")
    return 0


# ---- patch ---------------------------------------------------------------------------------


def _check_checkpoint_out(out: str) -> None:
    """Refuse an ``--out`` for a standalone checkpoint that is a file."""
    if Path(out).exists() and not Path(out).is_dir():
        raise BoomerangError(f"--out {out} is a file; give a new folder for the checkpoint.")


def _patch_args(p: argparse.ArgumentParser) -> None:
    add_pair_arguments(p)
    p.add_argument("--patched", help="student layers to patch, e.g. 1,2")
    p.add_argument("--order", choices=[o for o in ORDER_NAMES if o != "custom"])
    p.add_argument("--k", type=int, help="with --order: how many student layers to patch")
    _calib_arguments(p)
    p.add_argument("--out", required=True, help="folder for the standalone checkpoint")


@command("patch", "build an intermediate model and save it as a standalone HF checkpoint", _patch_args)
def _patch(args: argparse.Namespace) -> int:
    if args.patched is not None and (args.order is not None or args.k is not None):
        raise BoomerangError("Give either --patched or --order with --k, not both.")
    if (args.order is None) != (args.k is None):
        raise BoomerangError("--order and --k go together: --order names the order, --k how many layers to patch.")
    if args.patched is None and args.order is None:
        raise BoomerangError("Say what to patch: --patched 1,2 or --order last-to-first --k 3 (--patched '' for the student).")
    _check_checkpoint_out(args.out)
    patched = Patched.parse(args.patched, example="--patched 1,2,5")
    pair = pair_from_args(args)
    if args.order is not None:
        calib = _calib_from_args(pair, args) if needs_calibration(args.order) else None
        model = build_order(pair, args.order, args.k, calib)
    else:
        model = pair.build(patched=patched)
    out = export_model(model, args.out, tokenizer=pair.tokenizer)
    print(f"wrote {model.config.num_hidden_layers}-layer model ({model.num_parameters():,} params, "
          f"patched {list(model.boomerang_patched)}) to {out}")
    return 0


# ---- distill -------------------------------------------------------------------------------


def _prune_args(p: argparse.ArgumentParser) -> None:
    add_pair_arguments(p)
    p.add_argument("--method", required=True,
                   help=f"pruning baseline ({', '.join(BASELINES)}): which teacher layers to drop (laco: to collapse)")
    p.add_argument("--layers", type=int, required=True, help="decoder layers of the pruned teacher")
    _calib_arguments(p)
    p.add_argument("--out", required=True, help="folder for the standalone checkpoint")


@command("prune", "build a pruning baseline of the teacher at one size and save it as a standalone HF checkpoint",
         _prune_args)
def _prune(args: argparse.Namespace) -> int:
    _check_checkpoint_out(args.out)
    if args.method not in BASELINES:
        raise BoomerangError(f"Unknown pruning baseline {args.method!r}; choose one of {', '.join(BASELINES)}.")
    pair = pair_from_args(args)
    calib = _calib_from_args(pair, args) if needs_calibration(args.method) else None
    method = pruning_method(args.method)
    keep = pruning_order(pair, method, calib, sizes=[args.layers])[args.layers]
    model = prune_teacher(pair, keep)
    out = export_model(model, args.out, tokenizer=pair.tokenizer)
    what = "collapsed groups" if method == "laco" else "kept teacher layers"
    print(f"wrote {args.layers}-layer {args.method} model ({model.num_parameters():,} params, {what} {keep}) to {out}")
    return 0


def _distill_args(p: argparse.ArgumentParser) -> None:
    DistillConfig.add_cli_arguments(p)


@command("distill", "train a boomerang student (or an ablation) from a teacher", _distill_args)
def _distill(args: argparse.Namespace) -> int:
    config = DistillConfig.from_cli_args(args)
    stop = threading.Event()

    def on_sigint(signum, frame):  # first Ctrl-C: checkpoint and stop; second: abort
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step (Ctrl-C again to abort)...", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        out = distill(config, should_stop=stop, show_progress_bar=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    if not process_state().is_main_process:
        return 0  # the main process speaks for the run
    if stop.is_set():
        print(f"stopped; checkpoint {out}; continue with the same command plus --resume")
        return 130
    print(f"wrote student to {out}")
    return 0


# ---- sweep / similarity (evaluation) -------------------------------------------------------


def _output_file(path: str) -> Path:
    """Check an output file's path (CSV, JSON, PNG...) before any work is done."""
    out = Path(path)
    if out.is_dir():
        raise BoomerangError(f"--out {path} is a folder; give a file name such as {Path(path) / 'results.csv'}.")
    try:  # fail before the work, not after it
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BoomerangError(f"Could not write {out}: {e.strerror or e}.") from None
    return out


def _write_csv(frame: pd.DataFrame, out: Path, index: bool = False) -> None:
    """Write a CSV all at once (a full disk leaves the old file, not a 0-byte one)."""
    try:
        atomic_write(out, frame.to_csv(index=index))
    except OSError as e:
        raise BoomerangError(f"Could not write {out}: {e.strerror or e}.") from None


def _calib_arguments(p: argparse.ArgumentParser) -> None:
    EvalConfig.add_cli_arguments(p, only=EvalConfig.CALIBRATION)


def _calib_from_args(pair: BoomerangPair, args: argparse.Namespace):
    return EvalConfig.from_cli_args(args).calibration(pair)


def _sweep_args(p: argparse.ArgumentParser) -> None:
    add_pair_arguments(p)
    p.add_argument("--orders", default="last-to-first", help="comma-separated: " + ", ".join(ORDERS))
    p.add_argument("--custom", help="with --orders custom: the patching sequence, e.g. 6,5,0,1,2,3,4")
    EvalConfig.add_cli_arguments(p)  # --data, --split, --seq-len, --max-blocks and the calibration text
    p.add_argument("--metrics", default="perplexity",
                   help="comma-separated: perplexity and/or lm-eval tasks (bbc_news, demo_cloze, ...)")
    p.add_argument("--limit", type=float, help="examples per lm-eval task (an int, or a fraction < 1)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-cache", action="store_true", help="recompute even if a cached result exists")
    p.add_argument("--compare", nargs="+", default=[], metavar="MODEL",
                   help="other models (folders or hub ids) of the same tokenizer, one row each, e.g. a student "
                        "distilled at another size")
    p.add_argument("--out", required=True, help="CSV file for the results")


@command("sweep", "perplexity / accuracy of every size of one or more patch orders (and baselines)", _sweep_args)
def _sweep(args: argparse.Namespace) -> int:
    out = _output_file(args.out)
    orders = [o.strip() for o in args.orders.split(",") if o.strip()]
    custom = parse_numbers(args.custom, "--custom 6,5,0,1") if args.custom else None
    if "custom" in orders and not custom:
        raise BoomerangError("--orders custom needs --custom, the patching sequence, e.g. 6,5,0,1,2,3,4.")
    limit = check_limit(args.limit)
    if args.batch_size < 1:
        raise BoomerangError(f"--batch-size must be at least 1, not {args.batch_size}.")
    cfg = EvalConfig.from_cli_args(args)
    pair = pair_from_args(args)
    calib = cfg.calibration(pair) if any(needs_calibration(o) for o in orders) else None
    progress, close = tqdm_progress("sweep")
    try:
        frame = sweep(pair, orders, data=cfg.data, metrics=args.metrics, split=cfg.split,
                      seq_len=cfg.seq_len, max_blocks=cfg.blocks, calib_ids=calib,
                      progress=progress, custom=custom, limit=limit, batch_size=args.batch_size,
                      use_cache=not args.no_cache, compare=args.compare)
    finally:
        close()
    _write_csv(frame, out)
    shown = [c for c in frame.columns if c not in ("kept", "seconds")]
    print(frame[shown].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"wrote {len(frame)} rows to {out}")
    return 0


def _similarity_args(p: argparse.ArgumentParser) -> None:
    add_pair_arguments(p)
    _calib_arguments(p)
    p.add_argument("--blocks-out", help="also write the per-student-layer table (block_similarity) here")
    p.add_argument("--out", required=True, help="CSV file for the student x teacher cosine matrix")


@command("similarity", "cosine similarity of student vs teacher hidden states (and per-layer table)",
         _similarity_args)
def _similarity(args: argparse.Namespace) -> int:
    out = _output_file(args.out)
    blocks_out = _output_file(args.blocks_out) if args.blocks_out else None
    if blocks_out is not None and blocks_out.resolve() == out.resolve():
        raise BoomerangError(f"--out and --blocks-out name the same file ({args.out}); give two files.")
    pair = pair_from_args(args)
    calib = _calib_from_args(pair, args)
    sim = similarity_matrix(pair, calib)
    _write_csv(sim, out, index=True)
    print(sim.to_string(float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {sim.shape[0]}x{sim.shape[1]} matrix to {out}")
    if blocks_out is not None:
        table = block_similarity(pair, calib)
        _write_csv(table, blocks_out)
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        print(f"wrote per-layer table to {args.blocks_out}")
    return 0


# ---- paper-eval ----------------------------------------------------------------------------


def _paper_eval_args(p: argparse.ArgumentParser) -> None:
    add_pair_arguments(p)
    p.add_argument("--tasks", default="paper", help="a preset (paper, paper-classification, "
                   "paper-perplexity, paper-generation) and/or lm-eval task names, comma-separated")
    p.add_argument("--order", help="patch order (default: first-to-last for Llama, else last-to-first)")
    p.add_argument("--k", help="sizes to evaluate, e.g. 0,2,5 (default: every size)")
    p.add_argument("--limit", type=float, help="examples per task (an int, or a fraction < 1)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", required=True, help="folder for one JSON file per size")


@command("paper-eval", "the paper's lm-eval suite at every size of an order, one JSON per size",
         _paper_eval_args)
def _paper_eval(args: argparse.Namespace) -> int:
    limit = check_limit(args.limit)
    if args.batch_size < 1:
        raise BoomerangError(f"--batch-size must be at least 1, not {args.batch_size}.")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise BoomerangError(f"--out {args.out} is a file; give a folder for the result files.")
    sizes = parse_numbers(args.k, "--k 1,3") if args.k else None
    progress, close = tqdm_progress("paper-eval")
    try:
        paths = evaluate_sizes(pair_from_args(args), args.out, tasks=args.tasks, order=args.order,
                               sizes=sizes, limit=limit, batch_size=args.batch_size, progress=progress)
    finally:
        close()
    print(f"wrote {len(paths)} result files to {args.out}: " + ", ".join(p.name for p in paths))
    return 0


# ---- demo ----------------------------------------------------------------------------------


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("build",), help="build: rebuild the bundled demo family from scratch")
    p.add_argument("--out", default=None, help="where to write the weights and model card (default: the package's demo assets)")
    p.add_argument("--work", default="runs/demo-build", help="intermediate runs; an interrupted build resumes from them")
    p.add_argument("--teacher-steps", type=int, default=6000, dest="teacher_steps", help="teacher training steps")
    p.add_argument("--student-steps", type=int, default=150, dest="student_steps")
    p.add_argument("--eval-blocks", type=int, default=256, dest="eval_blocks")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


@command("demo", "rebuild the bundled demo family (corpus, tokenizer, teacher, students, model card)", _demo_args)
def _demo(args: argparse.Namespace) -> int:
    out = args.out or demo_assets_dir()
    teacher = TeacherConfig(num_threads=args.threads, max_steps=args.teacher_steps)
    card = build_demo(out, args.work, teacher, student_steps=args.student_steps,
                      eval_blocks=args.eval_blocks, threads=args.threads)
    r = card["results"]
    print(f"wrote the demo family to {out}: teacher perplexity {r['teacher']:.2f}, students "
          + ", ".join(f"{m} {p:.2f}" for m, p in r["students"].items()))
    return 0


# ---- smollm2 ------------------------------------------------------------------------------


def _smollm2_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("build", "report"),
                   help="build: distill the SmolLM2 student block-locally (resumable); report: measure it")
    p.add_argument("--out", default=None,
                   help="build: run folder (default: the cache, where --pair smollm2 finds it); "
                        "report: the JSON file to write")
    p.add_argument("--student", default=None, help="report: the student folder (default: the built one)")
    p.add_argument("--png", default=None, help="report: also draw the curves to this PNG file")
    p.add_argument("--card", default=None, help="report: also write the model card (Markdown) here")
    p.add_argument("--blocks", type=int, default=32, help="report: test blocks of 256 tokens (default 32)")
    p.add_argument("--acc-items", type=int, default=ACC_ITEMS,
                   help=f"report: items per zero-shot task scored at every size (default {ACC_ITEMS}; 0: none)")
    p.add_argument("--reuse-accuracy", default=None, metavar="REPORT",
                   help="report: take the accuracies from this earlier report of the same student and items")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--time-limit", type=float, default=None, metavar="MIN",
                   help="build: stop training after this many minutes (the student then says it stopped early)")
    p.add_argument("--ship", action="store_true",
                   help="build: make the built student's delta the shipped one that --pair smollm2 uses")


@command("smollm2", "build the block-locally distilled SmolLM2-135M student, or measure it", _smollm2_args)
def _smollm2(args: argparse.Namespace) -> int:
    if args.threads < 1 or args.blocks < 1:
        raise BoomerangError("--threads and --blocks must be at least 1.")
    if args.acc_items < 0:
        raise BoomerangError(f"--acc-items must be 0 (no accuracy) or more, not {args.acc_items}.")
    if args.time_limit is not None and not (args.time_limit > 0 and math.isfinite(args.time_limit)):
        raise BoomerangError(f"--time-limit must be a positive number of minutes, not {args.time_limit!r}.")
    limit = args.time_limit * 60 if args.time_limit is not None else None
    if args.action == "build":
        progress, close = tqdm_progress("smollm2 student")
        stop = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            student = build_smollm2_student(args.out, progress=progress, threads=args.threads, should_stop=stop,
                                            time_limit_s=limit, ship=args.ship)
        finally:
            close()
            signal.signal(signal.SIGINT, previous)
        if stop.is_set() and student.name != "student":
            print(f"stopped; checkpoint {student}; run the same command again to continue")
            return 130
        print(f"wrote the distilled SmolLM2 student to {student} and its delta to {student.parent / 'delta'}"
              + (" (now the shipped student)" if args.ship else ""))
        return 0
    previous = None
    if args.reuse_accuracy:
        try:
            previous = json.loads(Path(args.reuse_accuracy).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BoomerangError(f"--reuse-accuracy {args.reuse_accuracy!r} is not a readable report: {e}.") from None
        if not isinstance(previous, dict):
            raise BoomerangError(f"--reuse-accuracy {args.reuse_accuracy!r} does not hold a report.")
    student = args.student or smollm2_dirs("distilled")[1]
    out = _output_file(args.out or "smollm2_report.json")
    png = _output_file(args.png) if args.png else None
    card = _output_file(args.card) if args.card else None
    progress, close = tqdm_progress("smollm2 report")
    try:
        rep = smollm2_report(student, max_blocks=args.blocks, threads=args.threads, progress=progress,
                             acc_items=args.acc_items, previous=previous)
    finally:
        close()
    why = write_report(rep, out, png, card)
    print(f"test perplexity: teacher {rep['teacher']:,.2f}, student {rep['student']:,.2f} "
          f"({rep['student_over_teacher']:.2f}x)")
    print(f"{'layers':>6}  {'last-to-first':>14}  {'first-to-last':>14}  {'naive pruning':>14}")
    fmt = lambda v: f"{v:>14,.2f}" if v is not None else f"{'':>14}"  # noqa: E731
    for r in rep["rows"]:
        print(f"{r['layers']:>6}  {fmt(r['last_to_first'])}  {fmt(r['first_to_last'])}  {fmt(r['naive_pruning'])}")
    if any(r.get("accuracy") for r in rep["rows"]):
        print("zero-shot accuracy, % [95% interval], last-to-first | first-to-last:")
        for r in rep["rows"]:
            l2f, f2l = (r["accuracy"].get(o) or {} for o in ("last_to_first", "first_to_last"))
            print(f"{r['layers']:>6}  " + "   ".join(
                f"{t} {format_accuracy(l2f.get(t))} | {format_accuracy(f2l.get(t))}" for t in sorted({*l2f, *f2l})))
    print("checks: " + ", ".join(f"{k}={v}" for k, v in rep["checks"].items()))
    print(f"wrote {out}" + (f" and {png}" if png and not why else f" ({why})" if why else ""))
    return 0


# ---- entry point ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with every registered command."""
    parser = argparse.ArgumentParser(
        prog="boomerang", description="Boomerang distillation and model size interpolation."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


#: The file system's refusals a user can act on, by errno (safetensors reports them as "os error N").
_NO_ROOM = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file would be larger than allowed",
            errno.EDQUOT: "the disk quota is used up"}


def _file_system_refusal(e: Exception) -> str | None:
    """One sentence for a path too long or a write with no room left, else None (a real bug)."""
    code = getattr(e, "errno", None)
    if code is None:  # safetensors' own error: "... I/O error: File too large (os error 27)"
        found = re.search(r"os error (\d+)", str(e))
        code = int(found.group(1)) if found else None
    if code == errno.ENAMETOOLONG:
        return (f"The path {getattr(e, 'filename', None)!r} is too long for this file system (a name over 255 "
                "bytes, or the whole path over its limit); choose a shorter one.")
    if code in _NO_ROOM:
        where = f" {e.filename!r}" if getattr(e, "filename", None) else " a result file"
        return (f"Could not write{where}: {_NO_ROOM[code]}; results are written whole or not at all, so earlier "
                "files are as they were: make room and run the command again.")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for bad input, with one sentence on stderr)."""
    args = build_parser().parse_args(argv)
    # The CLI shows its own progress (tqdm); transformers' per-load bars and warnings are noise.
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    try:
        configure_threads()  # the dashboard's rule; --threads of a command sets its own
        return int(args._run(args) or 0)
    except BoomerangError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, SafetensorError) as e:
        why = _file_system_refusal(e)
        if why is None:
            raise
        print(f"error: {why}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `boomerang info ... | head`
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
