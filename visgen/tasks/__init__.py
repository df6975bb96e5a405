"""Training tasks: what the shared loop trains (`config.task` names one).

A task turns its part of the config into typed arguments, builds the model and
supplies the loss, the evaluation and a preview (see `visgen.train.task.Task`).
`visgen.tasks.restore` reads a trained workdir back for inference (only a task
knows how to build its model). This package itself stays light to import.
"""

from visgen.registry import Registry

TASKS: Registry = Registry("task")


def task_class(name: str) -> type:
    """The task class registered as `name` (a useful miss lists the valid names)."""
    from visgen.tasks import generator, tokenizer  # noqa: F401  (registers the tasks)

    return TASKS.get(name)


def make_task(config):
    """The task named by `config.task`, built from the config's typed sections."""
    return task_class(config.task).from_config(config)
