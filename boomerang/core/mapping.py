"""Which teacher layers each student layer stands for.

A boomerang student is initialised from a subset of its teacher's decoder layers. Student layer
``i`` is copied from teacher layer ``kept[i]`` and, after distillation, *stands for* the
contiguous block of teacher layers ``blocks[i] = (kept[i], ..., kept[i+1] - 1)``: the teacher
layers that were dropped after ``kept[i]`` are folded into it. Patching student layer ``i``
means running that whole teacher block in its place.

The blocks of a valid mapping are non-empty, contiguous, in order, and cover every teacher layer
exactly once, so ``kept[0] == 0`` and the last block ends at the teacher's last layer.

The reference implementation stores a mapping as ``student_config.json`` with
``copied_teacher_layers`` (= ``kept``) and ``pruned_teacher_layers`` (the rest);
:meth:`LayerMapping.from_student_config` and :meth:`LayerMapping.to_student_config` read and
write that format (plus a few fields of our own that the reference ignores).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BoomerangError
from .patched import Patched

FORMAT_VERSION = 1


def whole_number(value: Any, what: str) -> int:
    """``value`` as an int when it is a whole number (an int or anything with ``__index__``,
    such as a numpy integer); a bool, a fraction or text is refused in one sentence naming
    ``what``, never truncated."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise BoomerangError(f"{what} must be a whole number, not {value!r}.")
    return int(value.__index__())


@dataclass(frozen=True)
class LayerMapping:
    """Student layer ``i`` <-> contiguous teacher block ``blocks[i]``."""

    blocks: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if isinstance(self.blocks, (str, bytes)) or not isinstance(self.blocks, Iterable) or any(
                isinstance(b, (str, bytes)) or not isinstance(b, Iterable) for b in self.blocks):
            raise BoomerangError(f"Blocks must be a list of lists of teacher layers, not {self.blocks!r}.")
        blocks = tuple(tuple(whole_number(t, "Each teacher layer of a block") for t in b) for b in self.blocks)
        object.__setattr__(self, "blocks", blocks)
        if not blocks:
            raise BoomerangError("A layer mapping needs at least one student layer.")
        expected = 0
        for i, block in enumerate(blocks):
            if not block:
                raise BoomerangError(f"Student layer {i} stands for an empty teacher block.")
            if list(block) != list(range(expected, expected + len(block))):
                raise BoomerangError(
                    f"Student layer {i} stands for teacher layers {list(block)}, but blocks must be "
                    f"contiguous and continue at teacher layer {expected}."
                )
            expected += len(block)

    # ---- constructors -------------------------------------------------------------------

    @classmethod
    def from_rule(
        cls, num_teacher_layers: int, keep_first: int = 0, every: int = 2, keep_last: int = 2
    ) -> "LayerMapping":
        """The paper's rule: ``keep_first`` layers 1:1, groups of ``every``, ``keep_last`` 1:1.

        The middle teacher layers are grouped ``every`` at a time and each group becomes one
        student layer copied from the group's first layer (a shorter last group if ``every``
        does not divide the middle). E.g. Qwen3 (36 layers) with ``(0, 2, 2)`` gives 19 student
        layers copied from ``[0, 2, ..., 32, 34, 35]``. This is boomerang's default rule; the
        reference code's variant, which differs when the middle leaves two or more layers over,
        is :meth:`from_reference_rule`.
        """
        n, first, last = (whole_number(num_teacher_layers, "num_teacher_layers"),
                          whole_number(keep_first, "keep_first"), whole_number(keep_last, "keep_last"))
        every = whole_number(every, "every")
        if n < 1:
            raise BoomerangError(f"The teacher must have at least one layer, not {n}.")
        if every < 1:
            raise BoomerangError(f"'every' must be at least 1, not {every}.")
        if first < 0 or last < 0 or first + last > n:
            raise BoomerangError(
                f"keep_first={first} and keep_last={last} must be >= 0 and together at most the "
                f"teacher's {n} layers."
            )
        blocks: list[tuple[int, ...]] = [(t,) for t in range(first)]
        middle = range(first, n - last)
        blocks += [tuple(middle[i : i + every]) for i in range(0, len(middle), every)]
        blocks += [(t,) for t in range(n - last, n)]
        return cls(tuple(blocks))

    @classmethod
    def from_reference_rule(
        cls, num_teacher_layers: int, first_layers_to_keep: int = 1, every: int = 2,
        last_layers_to_keep: int = 2,
    ) -> "LayerMapping":
        """The reference code's rule (``get_layer_mappings``), exactly, with its argument names.

        Its ``first_layers_to_keep`` counts the embedding output, so it keeps
        ``first_layers_to_keep - 1`` layers one-to-one: ``from_rule(keep_first=f - 1)``. Groups of
        ``every`` are taken while a whole group ends at least ``last_layers_to_keep`` layers
        before the top; what is left of the middle stays one-to-one. So the two rules agree when
        ``every <= 2`` or the middle divides evenly, and differ otherwise: 10 layers with
        ``(1, 3, 2)`` keep ``[0, 3, 6, 7, 8, 9]`` here but ``[0, 3, 6, 8, 9]`` with
        ``from_rule(10, 0, 3, 2)``. :meth:`from_rule` stays the default: it folds the leftover
        layers into one shorter block (a smaller student, every layer in a block of at most
        ``every``), while the reference's trainer, given ``m`` leftover layers, aligns the
        student's hidden states after them with teacher states ``m`` layers too deep.
        """
        n, f, e, last = (whole_number(num_teacher_layers, "num_teacher_layers"),
                         whole_number(first_layers_to_keep, "first_layers_to_keep"), whole_number(every, "every"),
                         whole_number(last_layers_to_keep, "last_layers_to_keep"))
        if n < 1:
            raise BoomerangError(f"The teacher must have at least one layer, not {n}.")
        if e < 1:
            raise BoomerangError(f"'every' must be at least 1, not {e}.")
        if f < 1 or last < 0 or f - 1 + last > n:
            raise BoomerangError(
                f"first_layers_to_keep={f} (which counts the embedding, so at least 1) and "
                f"last_layers_to_keep={last} (at least 0) must leave the teacher's {n} layers room."
            )
        cut: set[int] = set()
        end = f + e - 1  # hidden-state index (= layers run) at which a whole group ends
        while end <= n - last:
            cut.update(range(end - e + 1, end))  # the group's first layer, end - e, is kept
            end += e
        return cls.from_kept([t for t in range(n) if t not in cut], n)

    @classmethod
    def from_kept(cls, kept: Sequence[int], num_teacher_layers: int) -> "LayerMapping":
        """A mapping from the teacher layers the student was copied from (sorted, starting at 0)."""
        if isinstance(kept, (str, bytes)) or not isinstance(kept, Iterable):
            raise BoomerangError(f"The kept teacher layers must be a list of layer numbers, not {kept!r}.")
        kept = [whole_number(k, "Each kept teacher layer") for k in kept]
        n = whole_number(num_teacher_layers, "num_teacher_layers")
        if not kept or kept[0] != 0:
            raise BoomerangError(
                "The kept teacher layers must start at layer 0 so that every teacher layer belongs "
                f"to a student layer's block; got {kept}."
            )
        if any(b <= a for a, b in zip(kept, kept[1:])) or kept[-1] >= n:
            raise BoomerangError(
                f"The kept teacher layers {kept} must be strictly increasing and below {n}."
            )
        ends = kept[1:] + [n]
        return cls(tuple(tuple(range(a, b)) for a, b in zip(kept, ends)))

    @classmethod
    def from_student_config(cls, config: dict[str, Any]) -> "LayerMapping":
        """Read the reference ``student_config.json`` (``copied_teacher_layers`` + ``pruned_...``)."""
        if not isinstance(config, dict):
            raise BoomerangError(f"student_config.json must hold a JSON object, not a {type(config).__name__}.")

        def ints(key: str, value: Any) -> list[int]:
            if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                raise BoomerangError(f"student_config.json's {key!r} must be a list of whole numbers, not {value!r}.")
            return value

        if "blocks" in config:
            blocks = config["blocks"]
            if not isinstance(blocks, list):
                raise BoomerangError(f"student_config.json's 'blocks' must be a list of lists, not {blocks!r}.")
            mapping = cls(tuple(tuple(ints("blocks", b)) for b in blocks))
            implied = {"copied_teacher_layers": mapping.kept, "pruned_teacher_layers": mapping.pruned,
                       "num_teacher_layers": mapping.num_teacher_layers,
                       "num_student_layers": mapping.num_student_layers}
            for key, value in implied.items():  # fields that say the same twice must agree
                if key in config and config[key] != value:
                    raise BoomerangError(f"student_config.json contradicts itself: its 'blocks' give {key} "
                                         f"{value!r}, but it says {config[key]!r}.")
            return mapping
        if "copied_teacher_layers" not in config:
            raise BoomerangError(
                "student_config.json has no 'copied_teacher_layers'; it is not a boomerang student."
            )
        kept = ints("copied_teacher_layers", config["copied_teacher_layers"])
        pruned = ints("pruned_teacher_layers", config.get("pruned_teacher_layers", []))
        n = config.get("num_teacher_layers", len(kept) + len(pruned))
        if isinstance(n, bool) or not isinstance(n, int):
            raise BoomerangError(f"student_config.json's 'num_teacher_layers' must be a whole number, not {n!r}.")
        return cls.from_kept(kept, n)

    # ---- views --------------------------------------------------------------------------

    @property
    def kept(self) -> list[int]:
        """Teacher layer each student layer was copied from."""
        return [b[0] for b in self.blocks]

    @property
    def pruned(self) -> list[int]:
        """Teacher layers with no student copy (folded into a block)."""
        kept = set(self.kept)
        return [t for t in range(self.num_teacher_layers) if t not in kept]

    @property
    def num_student_layers(self) -> int:
        """Number of student decoder layers."""
        return len(self.blocks)

    @property
    def num_teacher_layers(self) -> int:
        """Number of teacher decoder layers."""
        return self.blocks[-1][-1] + 1

    def block_end(self, i: int) -> int:
        """Last teacher layer of student layer ``i``'s block (whose output the student mimics)."""
        return self.blocks[i][-1]

    def patched_layers(self, patched: Iterable[int]) -> int:
        """Number of decoder layers of the model built with ``patched`` student layers patched."""
        patched = self.check_patched(patched)
        return sum(len(self.blocks[i]) if i in patched else 1 for i in range(len(self.blocks)))

    def check_patched(self, patched: Iterable[int]) -> Patched:
        """``patched`` as a :class:`~boomerang.core.patched.Patched` set of this student's layers;
        one clear error if an index is bad (see :meth:`Patched.check`)."""
        return Patched.check(patched, self.num_student_layers)

    def to_student_config(self) -> dict[str, Any]:
        """The reference ``student_config.json`` content, plus ``blocks`` and counts."""
        return {
            "copied_teacher_layers": self.kept,
            "pruned_teacher_layers": self.pruned,
            "num_teacher_layers": self.num_teacher_layers,
            "num_student_layers": self.num_student_layers,
            "blocks": [list(b) for b in self.blocks],
            "boomerang_format_version": FORMAT_VERSION,
        }

    def __repr__(self) -> str:
        return (
            f"LayerMapping({self.num_teacher_layers} teacher -> {self.num_student_layers} student "
            f"layers, kept={self.kept})"
        )
