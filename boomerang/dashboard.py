"""Backend helpers of the dashboard: pair specs, evaluation adapters, generation, training jobs.

The Streamlit pages (``app.py``, ``pages/``) only lay out widgets and plots; everything they
compute goes through this module, which never imports streamlit. It adapts the backend
(:mod:`boomerang.evaluate`, :mod:`boomerang.orders`, :mod:`boomerang.similarity`,
:mod:`boomerang.distill`) to what a page needs: a whole curve for one order, one point with its
latency, a streamed generation, a training run in a background thread with a stop button.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import evaluate, orders, pretrained, similarity
from .errors import BoomerangError
from .pair import ORDERS as SEQUENTIAL_ORDERS
from .pair import BoomerangPair

ROOT = Path(__file__).resolve().parent.parent


def runs_dir() -> Path:
    """Where runs and exports go: ``$BOOMERANG_RUNS`` or ``<repo>/runs``; students found here
    appear in the sidebar."""
    return Path(os.environ.get("BOOMERANG_RUNS", ROOT / "runs"))


def dashboard_runs_dir() -> Path:
    """Where the Train page writes its runs."""
    return runs_dir() / "dashboard"

#: Orders the dashboard offers, in display order; those the backend does not know are hidden.
ALL_ORDERS = ("last-to-first", "first-to-last", "similarity", "klpatch", "optimal", "shortest-path")
#: ``progress(done, total, message)``.
Progress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------------------------
# Pair specs: what the sidebar picks, what the URL stores


@dataclass(frozen=True)
class PairSpec:
    """A loadable pair: ``kind`` is "demo" (with a demo ``student`` name), "smollm2", or
    "folders" (``teacher`` and ``student`` are local folders or hub ids)."""

    kind: str
    student: str = ""
    teacher: str = ""
    label: str = ""

    @property
    def key(self) -> str:
        """A stable id (URL, caches)."""
        if self.kind == "demo":
            return "demo" if self.student in ("", "boomerang") else f"demo:{self.student}"
        if self.kind == "smollm2":
            return "smollm2"
        return f"folders:{self.teacher}|{self.student}"

    @property
    def title(self) -> str:
        return self.label or self.key

    def to_query(self) -> dict[str, str]:
        """Query parameters that reproduce this spec."""
        if self.kind == "folders":
            q = {"pair": "folders", "student": self.student}
            if self.teacher:
                q["teacher"] = self.teacher
            return q
        return {"pair": self.key}

    @classmethod
    def from_query(cls, q: dict[str, str]) -> "PairSpec | None":
        """The spec named by query parameters, or None when they name none."""
        pair = (q.get("pair") or "").strip()
        if pair in ("folders", "local", "hub") or (not pair and q.get("student")):
            student = (q.get("student") or "").strip()
            if not student:
                return None
            return cls("folders", student=student, teacher=(q.get("teacher") or "").strip(),
                       label=_folder_label(q.get("teacher") or "", student))
        if pair == "demo":
            return cls("demo", "boomerang", label="demo: boomerang student")
        if pair.startswith("demo:"):
            name = pair.split(":", 1)[1]
            return cls("demo", name, label=f"demo: {name} student")
        if pair == "smollm2":
            return cls("smollm2", label="SmolLM2-135M")
        return None

    def load(self, device: str | None = None) -> BoomerangPair:
        """Load the pair (slow: cache the result)."""
        from .loading import load_pair

        if self.kind == "demo":
            student = None if self.student in ("", "boomerang") else self.student
            return load_pair("demo", student=student, device=device)
        if self.kind == "smollm2":
            return load_pair("smollm2", device=device)
        return load_pair(teacher=self.teacher or None, student=self.student, device=device)

    def teacher_ref(self) -> str:
        """The teacher's folder or hub id (what a new distillation starts from)."""
        if self.kind == "folders":
            if self.teacher:
                return self.teacher
            meta = Path(self.student) / "student_config.json"
            if meta.is_file():
                t = json.loads(meta.read_text()).get("teacher")
                if t:
                    return str(t)
            raise BoomerangError(
                f"The student {self.student} does not record its teacher; give the teacher folder."
            )
        from .loading import named_pair_dirs

        name = "demo" if self.kind == "demo" else "smollm2"
        return str(named_pair_dirs(name, None)[0])


def _folder_label(teacher: str, student: str) -> str:
    s = Path(student)
    name = s.parent.name if s.name == "student" else s.name
    return f"{name} (local)" if not teacher else f"{Path(teacher).name} / {name}"


def demo_available() -> bool:
    """True when the bundled demo family is on disk."""
    return demo_student_dirs() != {}


def demo_student_dirs() -> dict[str, Path]:
    """Demo student name -> folder, for the students that exist on disk."""
    try:
        from . import demo

        names = getattr(demo, "DEMO_STUDENTS", ("boomerang",))
        out = {}
        for name in names:
            try:
                t, s = demo.demo_dirs(name)
            except Exception:  # noqa: BLE001 - a missing or half-built demo just is not offered
                continue
            if Path(t, "config.json").is_file() and Path(s, "config.json").is_file():
                out[name] = Path(s)
        return out
    except Exception:  # noqa: BLE001
        return {}


def smollm2_available() -> bool:
    """True when SmolLM2 can be loaded offline: converted already, or its GGUF package installed.

    Never converts here (the first load does, in about half a minute).
    """
    if (pretrained.smollm2_paths()[0] / "config.json").is_file():
        return True
    return importlib.util.find_spec(pretrained.GGUF_PACKAGE) is not None


def _folders_holding(root: Path, tail: str, max_depth: int = 3) -> set[Path]:
    """Folders ``root/*/.../<tail's parent>`` (1 to ``max_depth`` levels of ``*``) holding ``tail``."""
    if not root.is_dir():
        return set()
    return {m.parent for depth in range(1, max_depth + 1)
            for m in root.glob("/".join(["*"] * depth) + "/" + tail)}


def trained_students(root: Path | None = None) -> list[Path]:
    """Finished students under the runs folder (``<run>/student``), newest first."""
    found = _folders_holding(Path(root or runs_dir()), "student/student_config.json")
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def discover_pairs(root: Path | None = None) -> list[PairSpec]:
    """Every pair the sidebar can offer without typing: demo students, SmolLM2, trained runs."""
    out = [PairSpec("demo", name, label=f"demo: {name} student")
           for name in demo_student_dirs()]
    for s in trained_students(root):
        out.append(PairSpec("folders", student=str(s), label=_folder_label("", str(s))))
    if smollm2_available():
        out.append(PairSpec("smollm2", label="SmolLM2-135M (undistilled student)"))
    return out


def default_pair() -> PairSpec | None:
    """The pair the app opens on: the demo when it exists, else the newest trained student."""
    pairs = discover_pairs()
    return pairs[0] if pairs else None


def devices() -> list[str]:
    """Devices to offer: CUDA first when present, then CPU."""
    out = [f"cuda:{i}" if torch.cuda.device_count() > 1 else "cuda"
           for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return out + ["cpu"]


def configure_threads() -> int:
    """Set torch's CPU threads for an interactive server and return the number.

    ``$BOOMERANG_THREADS`` wins; otherwise one thread per two cores (at least one). Small models
    on a busy machine get *much* slower with more threads than free cores (spinning OpenMP
    workers), and a dashboard shares its machine with training runs.
    """
    env = os.environ.get("BOOMERANG_THREADS")
    n = int(env) if env and env.isdigit() and int(env) > 0 else max(1, (os.cpu_count() or 2) // 2)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def release_memory() -> None:
    """Give memory back after a pair is dropped (CUDA cache included)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# Describing a pair


def block_label(block: tuple[int, ...]) -> str:
    """``(4, 5)`` -> "T4–5", ``(11,)`` -> "T11"."""
    return f"T{block[0]}" if len(block) == 1 else f"T{block[0]}–{block[-1]}"


def layer_labels(pair: BoomerangPair) -> list[str]:
    """One label per student layer: "S2 → T4–5"."""
    return [f"S{i} → {block_label(b)}" for i, b in enumerate(pair.mapping.blocks)]


def strip_cells(pair: BoomerangPair, patched: Iterable[int]) -> list[dict[str, Any]]:
    """The composed model, bottom to top: one dict per layer (position, source, index, student layer)."""
    patched = pair.mapping.check_patched(patched)
    cells = []
    for i, block in enumerate(pair.mapping.blocks):
        if i in patched:
            cells += [{"source": "teacher", "index": t, "student_layer": i} for t in block]
        else:
            cells.append({"source": "student", "index": i, "student_layer": i})
    for p, c in enumerate(cells):
        c["position"] = p
    return cells


def size_of(pair: BoomerangPair, patched: Iterable[int]) -> dict[str, int]:
    """Layers and parameters of the model built with ``patched``."""
    patched = pair.mapping.check_patched(patched)
    return {"layers": pair.mapping.patched_layers(patched),
            "params": int(pair.num_parameters(patched))}


def pair_summary(pair: BoomerangPair) -> dict[str, Any]:
    """Sizes of both ends, for headers and the Learn page."""
    n = pair.mapping.num_student_layers
    return {
        "name": pair.name or "",
        "architecture": type(pair.teacher).__name__,
        "student_layers": n,
        "teacher_layers": pair.mapping.num_teacher_layers,
        "student_params": int(pair.num_parameters(())),
        "teacher_params": int(pair.num_parameters(range(n))),
        "device": str(next(pair.teacher.parameters()).device),
    }


# --------------------------------------------------------------------------------------------
# Data


def load_eval_blocks(pair: BoomerangPair, source: str, seq_len: int, max_blocks: int,
                     split: str = "validation") -> torch.Tensor:
    """Held-out token blocks of ``source`` for evaluation, on the pair's device."""
    from .data import load_blocks
    from .errors import DataError

    if pair.tokenizer is None:
        raise BoomerangError("This pair has no tokenizer; save one with the student or teacher.")
    try:
        blocks = load_blocks(source, pair.tokenizer, seq_len, split=split, max_blocks=max_blocks)
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise BoomerangError(f"Could not read evaluation data '{source}': {e}".split("\n")[0]) from None
    return blocks


def calibration_ids(pair: BoomerangPair, source: str, seq_len: int, n: int = 8) -> torch.Tensor:
    """A few training blocks to choose data-driven orders on (never the evaluation blocks)."""
    return orders.calibration_ids(pair, n=n, seq_len=seq_len, source=source)


# --------------------------------------------------------------------------------------------
# Evaluation (adapters over boomerang.evaluate / boomerang.orders)


def perplexity(model: Any, blocks: torch.Tensor) -> tuple[float, float]:
    """(perplexity, mean NLL) of ``model`` on ``blocks``."""
    r = evaluate.perplexity(model, blocks)
    return float(r.perplexity), float(r.nll)


def evaluate_point(pair: BoomerangPair, patched: Iterable[int], blocks: torch.Tensor) -> dict[str, Any]:
    """Perplexity, NLL, layers and parameters of the model built with ``patched``."""
    patched = pair.mapping.check_patched(patched)
    r = evaluate.evaluate_patched(pair, patched, blocks)
    return {"patched": tuple(sorted(patched)), "perplexity": float(r.perplexity), "nll": float(r.nll),
            **size_of(pair, patched)}


def available_orders(pair: BoomerangPair | None = None) -> list[str]:
    """Patch orders the backend can compute for ``pair`` (no exhaustive search on large students)."""
    out = [o for o in ALL_ORDERS if o in orders.ORDER_NAMES]
    too_many = pair is not None and pair.mapping.num_student_layers > orders.MAX_EXHAUSTIVE_LAYERS
    if too_many and "optimal" in out:
        out.remove("optimal")  # 2^n subsets: shortest-path stands in for it
    return out


def available_baselines() -> list[str]:
    """Pruning baselines the backend's sweep knows."""
    return list(evaluate.BASELINES)


def needs_calibration(order: str) -> bool:
    """True for orders and baselines chosen from data."""
    return order not in (*SEQUENTIAL_ORDERS, "custom", "naive-pruning")


def order_sets(pair: BoomerangPair, order: str, calib: torch.Tensor | None = None) -> list[frozenset]:
    """The patched set at each size ``k = 0..n`` of ``order``."""
    n = pair.mapping.num_student_layers
    if order in SEQUENTIAL_ORDERS:
        return [pair.sequential(order, k) for k in range(n + 1)]
    sets = [frozenset(s) for s in orders.patch_order(pair, order, calib)]
    if sets and len(sets[0]) != 0:
        sets = [frozenset()] + sets
    return sets


def _as_tuple(p: Any) -> tuple[int, ...]:
    """A patched set in any of the backend's spellings ("[0, 5]", "", frozenset, list) as a tuple."""
    if isinstance(p, str):
        return tuple(sorted(int(i) for i in json.loads(p))) if p.strip() else ()
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ()
    return tuple(sorted(int(i) for i in p))


def normalize_sweep(df: pd.DataFrame) -> pd.DataFrame:
    """A sweep frame with ``patched`` as sorted tuples (baseline rows: empty)."""
    df = df.copy()
    if "patched" in df:
        df["patched"] = df["patched"].map(_as_tuple)
    return df


def _two_arg(progress: Progress | None, label: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total, *_: progress(done, total, f"{label}: {done}/{total}")


def curve(pair: BoomerangPair, order: str, blocks: torch.Tensor, calib: torch.Tensor | None = None,
          progress: Progress | None = None) -> pd.DataFrame:
    """One order's curve: a row per size k (order, k, patched, layers, params, perplexity, nll)."""
    return normalize_sweep(evaluate.sweep(pair, [order], data=blocks, calib_ids=calib,
                                          progress=_two_arg(progress, order)))


def mean_ratio_at_intermediate_sizes(curve_df: pd.DataFrame, reference: pd.DataFrame) -> float | None:
    """Mean of ``curve_df``'s perplexity over ``reference``'s, row by row, over the rows whose size lies
    strictly between the first row's (the student's) and the last row's (the teacher's).

    Both frames are :func:`curve` results of one order on the same pair shape; rows that only
    swap one-to-one layers keep the student's size and do not count. None when there are none.
    """
    sizes = reference["layers"].to_numpy()
    between = (sizes > sizes[0]) & (sizes < sizes[-1])
    if not between.any():
        return None
    ratio = curve_df["perplexity"].to_numpy()[between] / reference["perplexity"].to_numpy()[between]
    return float(ratio.mean())


def available_metrics() -> list[str]:
    """Metrics a sweep can report: perplexity, and the offline lm-eval tasks when supported."""
    return ["perplexity", *evaluate.OFFLINE_TASKS]


def sweep(pair: BoomerangPair, orders: list[str], blocks: torch.Tensor, calib: torch.Tensor | None = None,
          progress: Progress | None = None, metric: str = "perplexity",
          limit: int | None = None) -> pd.DataFrame:
    """Several orders' curves (and pruning baselines) in one frame.

    ``metric`` is "perplexity" (columns perplexity, nll) or an lm-eval task name (a column with
    its accuracy, ``limit`` examples).
    """
    return normalize_sweep(evaluate.sweep(pair, list(orders), data=blocks, metrics=[metric],
                                          calib_ids=calib, limit=limit,
                                          progress=_two_arg(progress, ", ".join(orders))))


def single_layer_gains(pair: BoomerangPair, blocks: torch.Tensor,
                       progress: Progress | None = None) -> pd.DataFrame:
    """Perplexity drop from patching each student layer alone (student ppl - patched ppl)."""
    base = evaluate_point(pair, (), blocks)
    rows = []
    n = pair.mapping.num_student_layers
    for i in range(n):
        if progress:
            progress(i, n, f"patching layer {i} alone")
        p = evaluate_point(pair, (i,), blocks)
        rows.append({"student_layer": i, "block": block_label(pair.mapping.blocks[i]),
                     "perplexity": p["perplexity"], "gain": base["perplexity"] - p["perplexity"],
                     "nll_gain": base["nll"] - p["nll"], "params_added": p["params"] - base["params"]})
    return pd.DataFrame(rows)


def similarity_tables(pair: BoomerangPair, calib: torch.Tensor) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(student x teacher cosine-similarity matrix, one row per student layer with its gains)."""
    per_layer = similarity.block_similarity(pair, calib).copy()
    per_layer["label"] = [f"S{i} → {block_label(b)}" for i, b in enumerate(pair.mapping.blocks)]
    return similarity.similarity_matrix(pair, calib), per_layer


def mapping_cells(pair: BoomerangPair) -> list[tuple[str, str]]:
    """(row, column) labels of the similarity matrix where each student state should match."""
    cells = [("emb", "emb")]
    cells += [(f"s{i}", f"t{b[-1]}") for i, b in enumerate(pair.mapping.blocks)]
    return cells


@torch.inference_mode()
def latency_ms_per_token(model: Any, new_tokens: int = 16, prompt_len: int = 8, repeats: int = 2) -> float:
    """Milliseconds per generated token (greedy, KV cache, batch 1), best of ``repeats``."""
    device = next(model.parameters()).device
    vocab = model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config") \
        else model.config.vocab_size
    ids = torch.arange(prompt_len, device=device).remainder(vocab).unsqueeze(0)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        for _ in range(new_tokens - 1):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - t0) * 1000 / new_tokens)
    return best


def latency_profile(pair: BoomerangPair, sets: list[frozenset]) -> list[float]:
    """Latency per token (ms) of each patched set."""
    return [latency_ms_per_token(pair.build(patched=s)) for s in sets]


# --------------------------------------------------------------------------------------------
# Generation


def stream_generate(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 60,
                    temperature: float = 0.8) -> Iterator[str]:
    """Generate from ``model`` in a thread and yield the text as it comes (for ``st.write_stream``)."""
    from transformers import TextIteratorStreamer

    if tokenizer is None:
        raise BoomerangError("This pair has no tokenizer, so it cannot generate text.")
    if not prompt.strip():
        raise BoomerangError("Type a prompt first.")
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            evaluate.generate_text(model, tokenizer, prompt, max_new_tokens=max_new_tokens,
                                   temperature=temperature, streamer=streamer)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
            streamer.end()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    yield from streamer
    th.join()
    if errors:
        e = errors[0]
        if isinstance(e, BoomerangError):
            raise e
        raise BoomerangError(f"Generation failed: {type(e).__name__}: {e}".split("\n")[0])


# --------------------------------------------------------------------------------------------
# Export


def export_patched(pair: BoomerangPair, patched: Iterable[int], out_dir: str | os.PathLike) -> Path:
    """Save the model built with ``patched`` as a standalone checkpoint folder."""
    from .export import export_model

    return export_model(pair.build(patched=pair.mapping.check_patched(patched)), out_dir, pair.tokenizer)


def zip_folder(folder: str | os.PathLike) -> bytes:
    """The folder as a zip archive, in memory (for a download button)."""
    import io
    import zipfile

    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f"{folder.name}/{f.relative_to(folder)}")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Training jobs (a distillation in a background thread)


@dataclass
class TrainingJob:
    """A distillation run in a thread: poll ``history``/``state``; ``stop()`` checkpoints and ends it."""

    config: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    state: str = "starting"  # starting | running | stopped | done | failed
    message: str = ""
    result: Path | None = None
    started: float = field(default_factory=time.time)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def step(self) -> int:
        return self.history[-1]["step"] if self.history else 0

    def start(self) -> "TrainingJob":
        self.config.validate()
        self._thread = threading.Thread(target=self._run, name=f"distill:{self.out.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _on_progress(self, p: Any) -> None:
        self.state = "running"
        rec = {"step": p.step, "total": p.total, "lr": p.lr, "tokens_per_s": p.tokens_per_s,
               "eta_s": p.eta_s, "elapsed_s": p.elapsed_s, "event": p.event, **p.losses}
        self.history.append(rec)

    def _run(self) -> None:
        from .distill import distill

        try:
            self.result = Path(distill(self.config, progress=self._on_progress, should_stop=self._stop))
            self.state = "stopped" if self._stop.is_set() and self.result.name != "student" else "done"
            self.message = f"Student saved to {self.result}" if self.state == "done" else \
                f"Stopped at step {self.step}; checkpoint {self.result}"
        except BoomerangError as e:
            self.state, self.message = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - shown to the user as one sentence
            self.state, self.message = "failed", f"Training failed: {type(e).__name__}: {e}".split("\n")[0]


_JOBS: dict[str, TrainingJob] = {}
_JOBS_LOCK = threading.Lock()


def start_training(config: Any) -> TrainingJob:
    """Start a distillation in the background; one job per output folder."""
    key = str(Path(config.out).resolve())
    with _JOBS_LOCK:
        old = _JOBS.get(key)
        if old is not None and old.running:
            raise BoomerangError(f"A run is already training into {config.out}; stop it or pick another name.")
        job = TrainingJob(config).start()
        _JOBS[key] = job
    return job


def training_job(out: str | os.PathLike) -> TrainingJob | None:
    """The job (running or finished in this process) writing to ``out``."""
    return _JOBS.get(str(Path(out).resolve()))


def read_log(out: str | os.PathLike) -> pd.DataFrame:
    """A run's ``log.jsonl`` as a frame (empty when there is none)."""
    p = Path(out) / "log.jsonl"
    if not p.is_file():
        return pd.DataFrame()
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return pd.DataFrame(rows)


def run_status(out: str | os.PathLike) -> dict[str, Any]:
    """What is on disk for a run: finished student, last checkpoint step, logged steps."""
    from .distill import last_checkpoint

    out = Path(out)
    ck = last_checkpoint(out) if out.is_dir() else None
    return {"student": (out / "student") if (out / "student" / "config.json").is_file() else None,
            "checkpoint": ck, "checkpoint_step": int(ck.name.split("-")[-1]) if ck else 0,
            "config": json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else None}


def dashboard_runs() -> list[Path]:
    """Runs started from the dashboard, newest first."""
    root = dashboard_runs_dir()
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.stat().st_mtime, reverse=True)


# --------------------------------------------------------------------------------------------
# A tiny pair for tests and trials without the demo


def build_tiny_pair(root: str | os.PathLike, num_layers: int = 6, hidden: int = 32,
                    vocab_size: int = 512, seed: int = 0) -> tuple[Path, Path, Path]:
    """A tiny random Llama teacher + its student + a text file, under ``root``.

    Returns ``(teacher_dir, student_dir, text_file)``. The tokenizer is a small byte-level BPE
    trained on a few Shakespeare plays (or on synthetic text when that package is missing).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from .demo import train_tokenizer
    from .mapping import LayerMapping
    from .student import init_student, save_student

    root = Path(root)
    t_dir, s_dir, text_file = root / "teacher", root / "student", root / "text.txt"
    if (s_dir / "student_config.json").is_file() and text_file.is_file():
        return t_dir, s_dir, text_file
    try:
        from .demo import shakespeare_documents

        texts = [d.text for d in shakespeare_documents()[:40]]
    except Exception:  # noqa: BLE001
        words = "the king and queen of a far land went to see the sea with their old friend".split()
        g = torch.Generator().manual_seed(seed)
        texts = [" ".join(words[int(i)] for i in torch.randint(len(words), (400,), generator=g))
                 for _ in range(60)]
    root.mkdir(parents=True, exist_ok=True)
    text_file.write_text("\n\n".join(texts), encoding="utf-8")
    tok = train_tokenizer(texts, root / "tokenizer", vocab_size=vocab_size)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=256, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    teacher = LlamaForCausalLM(cfg).eval()
    teacher.save_pretrained(t_dir, safe_serialization=True)
    tok.save_pretrained(t_dir)
    mapping = LayerMapping.from_rule(num_layers, keep_first=0, every=2, keep_last=2)
    student = init_student(teacher, mapping)
    save_student(student, mapping, s_dir, tok, teacher=str(t_dir))
    return t_dir, s_dir, text_file


# --------------------------------------------------------------------------------------------
# A small process-wide memo for results (shared by sessions: values are treated as read-only)


class Memo:
    """A thread-safe LRU of computed results keyed by tuples of strings and numbers."""

    def __init__(self, max_entries: int = 512) -> None:
        from collections import OrderedDict

        self._d: "OrderedDict[tuple, Any]" = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, key: tuple) -> Any | None:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._d

    def put(self, key: tuple, value: Any) -> Any:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.max_entries:
                self._d.popitem(last=False)
        return value

    def get_or_compute(self, key: tuple, compute: Callable[[], Any]) -> Any:
        hit = self.get(key)
        if hit is not None:
            return hit
        return self.put(key, compute())

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


RESULTS = Memo()


def pair_fingerprint(spec: PairSpec, device: str) -> str:
    """Key of a loaded pair in result caches: changes when a local student is retrained."""
    stamp = ""
    if spec.kind == "folders":
        for ref in (spec.student, spec.teacher):
            p = Path(ref) if ref else None
            if p is not None and p.exists():
                stamp += f"|{max((f.stat().st_mtime_ns for f in p.glob('*.safetensors')), default=0)}"
    return f"{spec.key}@{device}{stamp}"


class timed:
    """``with timed("name"):`` appends the block's duration to ``$BOOMERANG_TIMING_LOG`` (JSON lines).

    Off (free) unless the variable is set; the browser benchmark uses it to split a slider move
    into server time and browser time.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = os.environ.get("BOOMERANG_TIMING_LOG")

    def __enter__(self) -> "timed":
        self.t0 = time.time()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.path:
            t1 = time.time()
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"name": self.name, "start": self.t0, "end": t1,
                                    "ms": round(1000 * (t1 - self.t0), 2)}) + "\n")


def all_runs(max_depth: int = 3) -> list[Path]:
    """Every distillation run under the runs folder (a folder with ``log.jsonl``), newest first;
    the dashboard's own runs first."""
    found = _folders_holding(runs_dir(), "log.jsonl", max_depth)
    own = [p for p in found if p.parent == dashboard_runs_dir()]
    other = [p for p in found if p.parent != dashboard_runs_dir()]
    key = lambda p: (p / "log.jsonl").stat().st_mtime  # noqa: E731
    return sorted(own, key=key, reverse=True) + sorted(other, key=key, reverse=True)


def log_is_live(out: str | os.PathLike, within_s: float = 60) -> bool:
    """True when a run's log was written in the last ``within_s`` seconds (someone trains it)."""
    p = Path(out) / "log.jsonl"
    return p.is_file() and time.time() - p.stat().st_mtime < within_s
