"""Dataset loaders for boomerang's offline lm-eval tasks (referenced by the YAMLs beside this file)."""

from boomerang.eval.task_items import task_dataset


def bbc_news(**kwargs):
    """BBC News topic classification items (see :mod:`boomerang.eval.task_items`)."""
    return task_dataset("bbc_news")


def demo_cloze(**kwargs):
    """Held-out demo-corpus cloze items (see :mod:`boomerang.eval.task_items`)."""
    return task_dataset("demo_cloze")
