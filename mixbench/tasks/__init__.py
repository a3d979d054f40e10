"""Tasks (registered in TASKS): classification, regression and retrieval. A dataset says which
task it is (``DataBundle.task``); ``task_for`` builds that task's object for a run."""
from mixbench.registry import TASKS
from mixbench.tasks import classification, regression, retrieval  # noqa: F401  (registration)
from mixbench.tasks.base import Task, require_task


def task_for(data) -> Task:
    return TASKS.build({"name": data.task}, data=data)


__all__ = ["Task", "require_task", "task_for"]
