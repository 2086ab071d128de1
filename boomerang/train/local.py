"""Block-local distillation: train every student layer on its own to imitate its teacher block.

A boomerang student layer ``i`` stands for the contiguous teacher block ``b(i)`` (see
:mod:`boomerang.core.mapping`) and starts out as a copy of that block's first layer. Global
distillation (:mod:`boomerang.train.loop`) trains the whole student end to end, which needs a
backward pass through every layer and the vocabulary-sized head. *Block-local* distillation
asks each student layer for one thing only::

    teacher:   ... h_t[b(i)[0]]  --[ T_b(i)[0] ... T_b(i)[-1] ]-->  h_t[b(i)[-1] + 1] ...
                        |                                                  |
                        x_i  (the block's input)                           y_i (the block's output)
    student:            x_i  --[ S_i ]-->  S_i(x_i)   ~   y_i   (loss on this one layer)

so the training signal for layer ``i`` is the teacher's own hidden states at the two ends of
its block. There is no whole-model backward: the input ``x_i`` is detached, each layer's loss
reaches only that layer's weights, and one teacher forward per batch feeds the updates of all
student layers at once. Because a trained student layer is a drop-in replacement for its block,
it is exactly the property that patching (swapping a student layer back for its block) relies on.

**Capturing the block ends, for any architecture.** A forward *pre*-hook (``with_kwargs=True``)
on the first teacher layer of each block records the block input and the keyword arguments the
base model called the layer with -- position embeddings, the prepared attention mask (with
padding and, for sliding-window models, the right mask for that layer's type), position ids.
A forward hook on the block's last layer records its output (the raw layer output, not the
final-normed state that ``output_hidden_states`` returns for the last layer). The student layer
is then called directly, ``S_i(x, *args, **kwargs)``, with the very arguments its teacher layer
got. Nothing here knows about Llama, Qwen, GPT-NeoX or GPT-2 by name; the teacher forward also
stops (by an exception raised in a hook) after the last layer whose output is needed, so the
unused top layers, the final norm and the head are never run.

**Whose input?** With *teacher forcing* each student layer sees the teacher's block input; at
inference, though, student layer ``i`` sees the output of student layer ``i - 1``, and small
errors compound over the depth. Feeding the student's own running input (the previous student
layer's detached output) trains each layer to map *that* onto the teacher's block output, which
corrects rather than compounds the errors. ``teacher_input_prob = p`` mixes the two: for every
sequence of a batch and every layer, the input is the teacher's block input with probability
``p`` and the running student state otherwise (``p = 1``: teacher forcing, ``p = 0``: always
the student's state). A restart from the teacher's state mid-way is exactly what a
first-to-last patched model feeds its student layers, so a mix serves both patch orders.

**Loss** (per student layer, averaged over the real tokens, padding masked out)::

    cosine:      1 - cos(S_i(x), y)                         direction of the hidden state
    mse:         |S_i(x) - y|^2 / |y|^2                      per-token relative squared error
    cosine+mse:  the sum of the two

The MSE is relative per token because residual-stream norms grow with depth and differ wildly
between tokens ("massive activations"); a plain MSE would be dominated by a few of them.

**Training run.** It runs on the device Accelerate gives this process (a GPU when there is one,
unless told to use the CPU; see :mod:`.processes`), in one process or data-parallel in several
(``torchrun`` / ``accelerate launch``): each of ``W`` processes takes its ``batch_size`` rows of a
step's ``W * batch_size`` sequences, the gradients are summed across them by hand (each
process's loss is its share of the whole batch's), and a run gives the same losses and student
as one process with ``W`` times the batch; only the main process writes. :func:`local_distill` loads
the teacher, builds the student with
:func:`boomerang.init_student` (layers not trained stay exact teacher copies; by default the
one-to-one layers, whose block is a single teacher layer, are frozen), and trains with AdamW
(linear warmup, cosine decay) on ``[batch_size, seq_len]`` blocks of ``data``. On a CPU the
teacher forward is ~40% of a step's arithmetic; ``updates_per_batch = u`` reuses each batch's
teacher states for ``u`` consecutive updates (fewer distinct tokens, more updates per second).
The data order
and the random input choices are pure functions of ``(seed, step)``, so a checkpoint (written
atomically: trained layers, optimizer state, step) is all a killed run needs to continue to
exactly the result of an uninterrupted one. It is an objective (:class:`BlockLocal`) of the
one step loop every run shares (:mod:`.run`), and writes the same checkpoints
(:mod:`.checkpoints`). Output folder::

    OUT/config.json          the settings
    OUT/log.jsonl            one line per logged step: loss, per-layer losses, lr, tokens/s ...
    OUT/checkpoints/step-N/  the newest keep_checkpoints checkpoints (trained layers and
                             optimizer state as safetensors, step and settings as JSON)
    OUT/student/             the final student (boomerang.save_student), load_pair(student=...)

From code::

    from boomerang.train.local import LocalDistillConfig, local_distill
    student_dir = local_distill(LocalDistillConfig(teacher=..., out=..., steps=500), progress=print)

or ``python -m boomerang distill --mode local ...`` (a :class:`~boomerang.train.DistillConfig`
with ``mode="local"``, see :func:`from_distill_config`).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core import (
    LayerMapping,
    find_parts,
    init_student,
    load_model,
    output_tensor,
    save_student,
    split_layer_call,
)
from ..errors import BoomerangError
from ..progress import StopSignal
from ..threads import configure_threads
from ..zoo import resolve_teacher
from .batches import BlockOrder, training_blocks
from .checkpoints import check_global_batch, load_optimizer_state, optimizer_state
from .config import LOCAL_LOSSES, DistillConfig, LocalLoss, RunConfig
from .curves import starting_curves, validate, validation_blocks
from .events import DistillProgress
from .processes import Peers, process_state
from .run import Objective, RunEnd, RunFolder, StepDone, check_out, run_lock, train
from .schedule import lr_multiplier

LOSSES = LOCAL_LOSSES


Progress = Callable[[DistillProgress], None]


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@dataclass
class LocalDistillConfig(RunConfig):
    """Settings of a block-local distillation run (see the module docstring).

    One step is one optimizer update on ``batch_size`` sequences of ``seq_len`` tokens; each
    batch (and its teacher forward) serves ``updates_per_batch`` consecutive steps, so a run
    sees ``ceil(steps / updates_per_batch) * batch_size * seq_len`` distinct tokens
    (:attr:`total_tokens`). ``grad_clip`` applies per layer.
    """

    out: str = "runs/local-distill"
    lr: float = 2e-4
    warmup: int = 20
    save_every: int = 100
    loss: LocalLoss = "cosine+mse"
    layers: tuple[int, ...] | None = None  # student layers to train (None: all not frozen)
    freeze_one_to_one: bool = True  # layers standing for a single teacher layer stay the teacher's
    # Stop early (and still save the student) after this many seconds of training; the lr decay
    # then follows the time too (see lr_at), so such a run depends on the machine's speed.
    time_limit_s: float | None = None

    NOUN: ClassVar[str] = "local-distillation"
    # The lr schedule follows ``steps``, so (unlike a DistillConfig run) they may not change on
    # resume; a time limit may (a resumed build gets another budget).
    # The batch size may change on resume so that a run can move between numbers of processes: the
    # checkpoint's global batch (batch size x processes) must stay the same (checked on resume).
    RESUME_FREE: ClassVar[frozenset[str]] = RunConfig.RESUME_FREE | {"time_limit_s", "batch_size"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layers is not None:
            self.layers = tuple(self.layers)

    @property
    def total_tokens(self) -> int:
        """Training tokens of the whole run."""
        return self.tokens_after(self.steps)

    def tokens_after(self, step: int) -> int:
        """Distinct training tokens seen in the first ``step`` steps."""
        return -(-step // self.updates_per_batch) * self.batch_size * self.seq_len

    def validate(self) -> None:
        """Raise a one-sentence :class:`BoomerangError` for the first bad setting."""
        super().validate()
        if self.loss not in LOSSES:
            raise BoomerangError(f"Unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}.")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise BoomerangError(f"time_limit_s must be positive, not {self.time_limit_s!r}.")
        if self.layers is not None and not all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in self.layers):
            raise BoomerangError(f"layers must be whole numbers, not {list(self.layers)!r}.")


def from_distill_config(config: DistillConfig) -> LocalDistillConfig:
    """The block-local run that a :class:`DistillConfig` with ``mode="local"`` stands for.

    Embeddings, final norm and head are never trained locally; ``freeze`` containing
    ``one-to-one`` keeps the single-layer blocks at the teacher's weights too.
    """
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(RunConfig)}
    return LocalDistillConfig(**shared, loss=config.local_loss, freeze_one_to_one="one-to-one" in config.freeze)


def trained_layers(mapping: LayerMapping, config: LocalDistillConfig) -> list[int]:
    """The student layers a run trains: ``config.layers`` or every layer, minus frozen ones."""
    n = mapping.num_student_layers
    if config.layers is not None:
        bad = [i for i in config.layers if not 0 <= i < n]
        if bad:
            raise BoomerangError(f"Student layer(s) {bad} out of range: this student has layers 0..{n - 1}.")
        chosen = sorted(set(config.layers))
    else:
        chosen = list(range(n))
    if config.freeze_one_to_one:
        chosen = [i for i in chosen if len(mapping.blocks[i]) > 1]
    if not chosen:
        raise BoomerangError(
            "No student layer is left to train: every chosen layer stands for a single teacher "
            "layer and is frozen (set freeze_one_to_one=False or choose other layers)."
        )
    return chosen


# ---------------------------------------------------------------------------------------------
# Teacher block ends, the student layer call, the loss
# ---------------------------------------------------------------------------------------------


class BlockIO(NamedTuple):
    """The two ends of one teacher block, for one batch.

    ``x`` (``[B, T, H]``) is the block's input, ``y`` (``[B, T, H]``, or None when not
    requested) its output; ``args``/``kwargs`` are the other arguments the base model passed to
    the block's first layer (position embeddings, attention mask, ...), reused verbatim to call
    the student layer.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    args: tuple
    kwargs: dict[str, Any]


class _StopForward(Exception):
    """Raised by a hook once every needed teacher state is captured (skips the rest)."""


@torch.no_grad()
def teacher_block_io(
    teacher: nn.Module,
    mapping: LayerMapping,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    students: Sequence[int] | None = None,
    targets: Sequence[int] | None = None,
) -> dict[int, BlockIO]:
    """One teacher forward; the block ends of student layers ``students`` (default: all).

    ``input_ids``/``attention_mask`` are ``[B, T]``. Returns ``{i: BlockIO}``: ``x`` is the
    input of teacher layer ``blocks[i][0]`` with its call arguments, and ``y`` the output of
    teacher layer ``blocks[i][-1]`` for ``i`` in ``targets`` (default: ``students``), else None.
    The forward stops after the last teacher layer whose output is needed.
    """
    layers = find_parts(teacher).layer_list(teacher)
    students = list(range(mapping.num_student_layers)) if students is None else sorted(set(students))
    targets = students if targets is None else sorted(set(targets))
    if not students:
        return {}
    start = {mapping.blocks[i][0]: i for i in students}  # teacher layer -> student layer
    end = {mapping.blocks[i][-1]: i for i in targets}
    stop_at = max([mapping.blocks[i][-1] for i in targets] + [mapping.blocks[i][0] for i in students])
    inputs: dict[int, tuple[torch.Tensor, tuple, dict]] = {}
    outputs: dict[int, torch.Tensor] = {}
    handles = []

    def pre_hook(i: int):
        def hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            h, rest, kw = split_layer_call(args, kwargs)
            inputs[i] = (h.detach().clone(), rest, kw)  # clone: a layer may update in place
            if mapping.blocks[i][0] == stop_at and i not in targets:
                raise _StopForward
        return hook

    def post_hook(i: int):
        def hook(_m: nn.Module, _args: tuple, output: Any) -> None:
            outputs[i] = output_tensor(output).detach().clone()
            if mapping.blocks[i][-1] == stop_at:
                raise _StopForward
        return hook

    try:
        for t, i in start.items():
            handles.append(layers[t].register_forward_pre_hook(pre_hook(i), with_kwargs=True))
        for t, i in end.items():
            handles.append(layers[t].register_forward_hook(post_hook(i)))
        try:
            teacher(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
    finally:
        for h in handles:
            h.remove()
    return {i: BlockIO(inputs[i][0], outputs.get(i), inputs[i][1], inputs[i][2]) for i in students}


def call_layer(layer: nn.Module, hidden: torch.Tensor, io: BlockIO) -> torch.Tensor:
    """Run a decoder ``layer`` on ``hidden`` (``[B, T, H]``) with the block's captured arguments."""
    return output_tensor(layer(hidden, *io.args, **io.kwargs))


#: A token whose target hidden state is this many times longer than the batch's median token
#: carries a massive activation (an attention sink): ``sink_weight`` applies to it.
SINK_RATIO = 5.0


def sink_tokens(target: torch.Tensor, real: torch.Tensor | None = None, peers: Peers | None = None) -> torch.Tensor:
    """``[B, T]`` bool: the tokens of ``target`` (``[B, T, H]``) whose norm exceeds
    :data:`SINK_RATIO` times the median norm of the batch's real tokens (of the whole batch
    across ``peers``, when several processes each hold a part of it)."""
    norms = target.float().norm(dim=-1)  # [B, T]
    mask = real.bool() if real is not None else torch.ones_like(norms, dtype=torch.bool)
    if peers is not None and peers.world > 1:
        ref = peers.gather(norms)[peers.gather(mask)]
    else:
        ref = norms[mask]
    return norms > SINK_RATIO * ref.median()


def local_loss(
    pred: torch.Tensor, target: torch.Tensor, real: torch.Tensor | None, kind: str = "cosine+mse",
    sink_weight: float = 1.0, peers: Peers | None = None,
) -> torch.Tensor:
    """Weighted mean over real tokens of the per-token loss between ``pred`` and ``target``
    (``[B, T, H]``).

    ``real`` (``[B, T]``, bool/0-1, or None for all) masks out padding. ``kind``: ``cosine``
    (``1 - cos``), ``mse`` (``|pred - target|^2 / |target|^2`` per token), or their sum.
    ``sink_weight`` is the weight of the :func:`sink_tokens` (the rest weigh 1): a per-token mean
    gives a sink at one position of 256 a 1/256 share, although every later layer reads it.
    With ``peers`` (several processes, each with a part of the batch) this process's share: its
    tokens' weighted sum over the whole batch's total weight, so the shares (and their
    gradients) sum to the loss of the whole batch.
    """
    if kind not in LOSSES:
        raise BoomerangError(f"Unknown loss {kind!r}; choose one of {', '.join(LOSSES)}.")
    p, t = pred.float(), target.float()
    per_tok = torch.zeros(p.shape[:-1], device=p.device)  # [B, T]
    if kind in ("cosine", "cosine+mse"):
        per_tok = per_tok + (1.0 - F.cosine_similarity(p, t, dim=-1, eps=1e-8))
    if kind in ("mse", "cosine+mse"):
        per_tok = per_tok + (p - t).pow(2).sum(-1) / t.pow(2).sum(-1).clamp_min(1e-8)
    w = real.to(per_tok.dtype) if real is not None else torch.ones_like(per_tok)
    if sink_weight != 1.0:
        w = w * torch.where(sink_tokens(t, real, peers), sink_weight, 1.0)
    total_w = w.sum()
    if peers is not None:
        total_w = peers.sum(total_w.detach().clone())
    return (per_tok * w).sum() / total_w.clamp_min(1.0)


def _student_inputs(
    teacher_x: torch.Tensor, running: torch.Tensor | None, use_teacher: torch.Tensor | None
) -> torch.Tensor:
    """Per sequence: the teacher's block input where ``use_teacher`` ([B] bool), else ``running``."""
    if running is None or use_teacher is None:
        return teacher_x
    return torch.where(use_teacher[:, None, None], teacher_x, running)


def block_needs(mapping: LayerMapping, layers: Sequence[int], teacher_input_prob: float) -> list[int]:
    """Student layers whose block inputs a step needs: ``layers``, or every layer up to the last
    of them when student layers feed each other (``teacher_input_prob < 1``)."""
    layers = sorted(set(layers))
    return list(range(layers[-1] + 1)) if teacher_input_prob < 1.0 and layers else layers


def student_losses(
    student: nn.Module,
    ios: dict[int, BlockIO],
    attention_mask: torch.Tensor | None,
    layers: Sequence[int],
    *,
    loss: str = "cosine+mse",
    teacher_input_prob: float = 1.0,
    generator: torch.Generator | None = None,
    grad: bool = False,
    sink_weight: float = 1.0,
    peers: Peers | None = None,
) -> dict[int, torch.Tensor]:
    """The local loss of every student layer in ``layers`` against the teacher's block ends ``ios``.

    ``ios`` comes from :func:`teacher_block_io` (with the layers of :func:`block_needs`).
    Student layers run in order; layer ``i`` gets, per sequence, the teacher's block input with
    probability ``teacher_input_prob`` (drawn from ``generator``) and otherwise the previous
    student layer's detached output. With ``grad=True`` the losses keep their graphs (each
    reaches only its own layer's weights). Returns ``{i: scalar loss}``. With ``peers``, this
    process holds rows ``rank * B .. (rank + 1) * B`` of the whole batch: the input choices are
    drawn for the whole batch and the losses are this process's shares (:func:`local_loss`).
    """
    layers = sorted(set(layers))
    s_layers = find_parts(student).layer_list(student)
    real = attention_mask.bool() if attention_mask is not None else None
    out: dict[int, torch.Tensor] = {}
    running: torch.Tensor | None = None  # [B, T, H] the previous student layer's output
    chain = teacher_input_prob < 1.0  # student layers feed each other
    for i in ([j for j in sorted(ios) if j <= layers[-1]] if chain else layers):
        x_t = ios[i].x  # [B, T, H]
        use_teacher = None
        if chain and running is not None:
            b = x_t.shape[0]
            world, rank = (peers.world, peers.rank) if peers is not None else (1, 0)
            # Drawn for the whole batch, so the choices do not depend on how many processes share it.
            draws = torch.rand(b * world, generator=generator)[rank * b:(rank + 1) * b]
            use_teacher = (draws < teacher_input_prob).to(x_t.device)  # [B]
        x = _student_inputs(x_t, running, use_teacher)
        with torch.set_grad_enabled(grad and i in layers):
            y = call_layer(s_layers[i], x, ios[i])  # [B, T, H]
        if i in layers:
            out[i] = local_loss(y, ios[i].y, real, loss, sink_weight, peers)
        running = y.detach()
    return out


def local_losses(
    teacher: nn.Module,
    student: nn.Module,
    mapping: LayerMapping,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    loss: str = "cosine+mse",
    teacher_input_prob: float = 1.0,
    layers: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    grad: bool = False,
) -> dict[int, torch.Tensor]:
    """One teacher forward on ``input_ids``/``attention_mask`` (``[B, T]``), then
    :func:`student_losses` of the student ``layers`` (default all). Returns ``{i: scalar loss}``."""
    layers = list(range(mapping.num_student_layers)) if layers is None else sorted(set(layers))
    if not layers:
        return {}
    ios = teacher_block_io(teacher, mapping, input_ids, attention_mask,
                           students=block_needs(mapping, layers, teacher_input_prob), targets=layers)
    return student_losses(student, ios, attention_mask, layers, loss=loss,
                          teacher_input_prob=teacher_input_prob, generator=generator, grad=grad)


# ---------------------------------------------------------------------------------------------
# Data order, schedule, checkpoints
# ---------------------------------------------------------------------------------------------


def lr_at(step: int, config: LocalDistillConfig, elapsed_s: float = 0.0) -> float:
    """Learning rate of step ``step`` (0-based): linear warmup, then cosine decay.

    With a ``time_limit_s`` the decay follows whichever is further along, the steps or the
    time (``elapsed_s`` of it used), so a run cut short by its time limit still ends annealed.
    """
    used = elapsed_s / config.time_limit_s if config.time_limit_s else 0.0
    return config.lr * lr_multiplier(step, config.warmup, config.steps, config.min_lr_ratio, used)


def _layer_weights(student: nn.Module, trained: list[int]) -> dict[str, nn.Parameter]:
    """The weights a run trains, by their names in the student (``model.layers.3.mlp...``)."""
    s_layers = find_parts(student).layer_list(student)
    ids = {id(p) for i in trained for p in s_layers[i].parameters() if p.requires_grad}
    return {name: p for name, p in student.named_parameters() if id(p) in ids}


# ---------------------------------------------------------------------------------------------
# The training run
# ---------------------------------------------------------------------------------------------


def local_distill(
    config: LocalDistillConfig,
    progress: Progress | None = None,
    should_stop: StopSignal = None,
    *,
    blocks: torch.Tensor | None = None,
    val_blocks: torch.Tensor | None = None,
    extra: dict[str, Any] | None = None,
    run_config: dict[str, Any] | None = None,
    show_progress_bar: bool = False,
) -> Path:
    """Run block-local distillation as ``config`` says; return ``OUT/student``.

    ``progress`` is called after every step with a :class:`~boomerang.train.DistillProgress`
    (its ``losses``: the mean and each trained layer's local loss, of the last logged step).
    ``should_stop`` (a callable or ``threading.Event``) is polled after every step: when it
    fires, a checkpoint is written and its folder returned; ``config.resume=True`` continues from
    it. ``blocks`` (``[n, seq_len]`` token ids) replaces ``config.data``, and ``val_blocks`` its
    validation split (with ``config.eval_every``: the interpolation curve measured while the
    layers train, see :mod:`.curves`). ``extra`` is merged into the student's provenance record
    in ``student_config.json``; ``run_config`` (default: ``config``'s settings) is what
    ``OUT/config.json`` records. ``show_progress_bar`` draws the CLI's bar.
    """
    config.validate()
    configure_threads(config.threads)  # None: the same default as the dashboard and the CLI
    out = Path(config.out)
    check_out(config, out, out / "student")
    with run_lock(out):
        objective = BlockLocal(config, out, blocks, val_blocks, extra)
        return train(objective, config, out, run_config or config.to_dict(), progress, should_stop,
                     time_limit_s=config.time_limit_s, show_progress_bar=show_progress_bar)


class BlockLocal(Objective):
    """Block-local distillation as an :class:`~.run.Objective` (see the module docstring).

    A step trains every chosen student layer on its own block's ends: one teacher forward
    (reused for ``updates_per_batch`` steps) and one backward through each layer alone. With
    several processes, each holds its rows of the step's batch and the gradients are summed by
    hand (:class:`~.processes.Peers`).
    """

    def __init__(self, config: LocalDistillConfig, out: Path, blocks: torch.Tensor | None,
                 val_blocks: torch.Tensor | None, extra: dict[str, Any] | None) -> None:
        self.config, self.out, self.extra = config, out, extra
        self.peers = Peers()

        # ---- models ---------------------------------------------------------------------------
        self.teacher_ref = resolve_teacher(config.teacher)
        self.device = process_state().device  # a GPU when there is one (and the run is not told cpu)
        teacher, self.tokenizer = load_model(self.teacher_ref, device=self.device, dtype=torch.float32)
        self.teacher = teacher.eval().requires_grad_(False)
        self.mapping = mapping = LayerMapping.from_rule(
            teacher.config.num_hidden_layers, config.keep_first, config.every, config.keep_last
        )
        self.trained = trained = trained_layers(mapping, config)
        self.student = student = init_student(teacher, mapping).float().eval()  # eval: no dropout, deterministic
        student.requires_grad_(False)
        self.s_layers = find_parts(student).layer_list(student)
        self.params: list[nn.Parameter] = []
        for i in trained:
            self.s_layers[i].requires_grad_(True)
            self.params += list(self.s_layers[i].parameters())
        self.weights = _layer_weights(student, trained)

        # ---- data and optimizer ---------------------------------------------------------------
        self.blocks = training_blocks(config.data, self.tokenizer, config.seq_len, config.split, config.max_blocks,
                                      teacher.get_input_embeddings().weight.shape[0], blocks, config.teacher)
        self.order = BlockOrder(len(self.blocks), config.seed)
        self.val_blocks = validation_blocks(config, self.tokenizer, val_blocks)
        self.opt = torch.optim.AdamW(self.params, lr=config.lr, betas=config.betas,
                                     weight_decay=config.weight_decay)
        self.per_step = config.batch_size * self.peers.world  # sequences per step, over every process
        self.needs = block_needs(mapping, trained, config.teacher_input_prob)
        self._cached: tuple[int, dict[int, BlockIO]] | None = None  # (batch number, its block ends)

    # ---- resume ---------------------------------------------------------------------------

    def check(self, ckpt: Path, state: dict[str, Any]) -> None:
        changed = self.config.resume_conflict(state.get("config", {}))
        if changed:
            raise BoomerangError(
                f"The checkpoint {str(ckpt)!r} was made with other settings: {changed}; "
                "resume with the run's own settings or choose another out folder.")
        check_global_batch(ckpt, state, self.per_step, "batch size")

    def load(self, ckpt: Path, state: dict[str, Any], tensors: dict[str, torch.Tensor] | None) -> None:
        own = {k[len("model."):]: v for k, v in (tensors or {}).items() if k.startswith("model.")}
        if set(own) != set(self.weights):
            raise BoomerangError(f"The checkpoint {str(ckpt)!r} does not hold the trained weights of this "
                                 "student; resume with the run's own settings.")
        with torch.no_grad():
            for name, p in self.weights.items():
                p.copy_(own[name])
        load_optimizer_state(self.opt, tensors or {}, state)

    def begin(self, step: int) -> None:
        """On a fresh run with validation, record where the boomerang starts (``curves.jsonl``)."""
        if self.val_blocks is not None and step == 0 and self.peers.main:
            starting_curves(self.out, self.teacher, self.student, self.mapping, self.val_blocks,
                            self.config.batch_size)
        self.peers.barrier()

    # ---- one step -------------------------------------------------------------------------

    def tokens_after(self, step: int) -> int:
        return self.config.tokens_after(step) * self.peers.world

    def step(self, step: int, elapsed_s: float, reported: bool) -> StepDone:
        config, peers = self.config, self.peers
        batch_no = step // config.updates_per_batch
        rows = self.order.indices(batch_no * self.per_step, self.per_step)[peers.rank * config.batch_size:]
        ids = self.blocks[rows[:config.batch_size]].to(self.device)  # [B, T]: this process's part of the batch
        mask = torch.ones_like(ids)  # packed blocks: no padding
        if self._cached is None or self._cached[0] != batch_no:
            self._cached = (batch_no, teacher_block_io(self.teacher, self.mapping, ids, mask, students=self.needs,
                                                       targets=self.trained))
        lr = lr_at(step, config, elapsed_s)
        for group in self.opt.param_groups:
            group["lr"] = lr
        g = torch.Generator().manual_seed(config.seed * 7_919 + step)  # input choices
        losses = student_losses(self.student, self._cached[1], mask, self.trained, loss=config.loss,
                                teacher_input_prob=config.teacher_input_prob, generator=g,
                                grad=True, sink_weight=config.sink_weight, peers=peers)
        self.opt.zero_grad(set_to_none=True)
        torch.stack(list(losses.values())).sum().backward()  # inputs are detached: each loss reaches only its own layer
        if peers.world > 1:  # each process's share: their sum is the whole batch's gradient
            for p in self.params:
                if p.grad is not None:
                    peers.sum(p.grad)
        if config.grad_clip > 0:
            for i in self.trained:
                torch.nn.utils.clip_grad_norm_(self.s_layers[i].parameters(), config.grad_clip)
        self.opt.step()
        return StepDone(lr, {str(i): v.detach() for i, v in losses.items()})

    def reduce(self, terms: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The mean of the layers' losses and each layer's (the processes' shares summed)."""
        shares = self.peers.sum(torch.stack(list(terms.values())))
        return {"loss": float(shares.sum()) / len(terms),
                "layer_losses": {i: round(float(v), 6) for i, v in zip(terms, shares)}}

    def losses(self, values: dict[str, Any]) -> dict[str, float]:
        return {"loss": values["loss"], **{f"layer {i}": v for i, v in values["layer_losses"].items()}}

    def evaluate(self, step: int, tokens: int) -> dict[str, float]:
        """The student's validation perplexities and its whole last-to-first curve (main process)."""
        if not self.peers.main:
            return {}
        return validate(self.out, self.student, self.teacher, self.mapping, self.val_blocks,
                        self.config.batch_size, step, tokens)

    def checkpoint(self, folder: RunFolder, step: int, record: dict[str, Any]) -> Path:
        def contents() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
            opt_tensors, opt_record = optimizer_state(self.opt)
            return ({**record, "config": self.config.to_dict(), "mapping": [list(b) for b in self.mapping.blocks],
                     "global_batch": self.per_step, **opt_record},
                    {**{f"model.{k}": v for k, v in self.weights.items()}, **opt_tensors})

        return folder.checkpoint(step, contents)

    # ---- the student ----------------------------------------------------------------------

    def finish(self, end: RunEnd) -> Path:
        """Save the student (``OUT/student``) with a record of how it was trained."""
        config, student = self.config, self.student
        student.requires_grad_(True)
        if hasattr(student.config, "use_cache"):
            student.config.use_cache = True
        record = {
            "method": "block-local distillation",
            "teacher_input_prob": config.teacher_input_prob, "loss": config.loss,
            "steps": end.step, "planned_steps": config.steps, "stopped_early": end.stopped_early,
            "tokens": end.tokens, "updates_per_batch": config.updates_per_batch,
            "data": config.data, "split": config.split,
            "seq_len": config.seq_len, "batch_size": config.batch_size, "lr": config.lr,
            "trained_layers": self.trained, "frozen_one_to_one": config.freeze_one_to_one,
            "seed": config.seed, "wall_time_s": round(end.elapsed_s, 1), "threads": torch.get_num_threads(),
            "device": str(self.device), "world_size": self.peers.world,
            "sink_weight": config.sink_weight,
            **(self.extra or {}),
        }
        student_dir = self.out / "student"
        if self.peers.main:
            save_student(student.to("cpu"), self.mapping, student_dir, tokenizer=self.tokenizer,
                         teacher=self.teacher_ref, extra={"distilled": True, "local_distill": record})
        self.peers.barrier()
        return student_dir
