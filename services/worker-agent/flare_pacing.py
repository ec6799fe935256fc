"""`TaskCheckPacer`: makes a workflow notice finished tasks as fast as its own setting says.

In NVFlare 2.9 a controller passes its `task_check_period` to its communicator as the public
attribute `task_check_period`, while the communicator (WFCommServer) sleeps on its private
`_task_check_period` (fixed at 0.2 s). Every round then waits up to 0.2 s after the last
result before aggregating. This component applies the workflow's period where it is read.
"""

from nvflare.apis.event_type import EventType
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_context import FLContext


class TaskCheckPacer(FLComponent):
    """At START_RUN, sets the task monitor period of workflow `workflow_id` to `period_s`."""

    def __init__(self, workflow_id: str, period_s: float) -> None:
        super().__init__()
        self.workflow_id = workflow_id
        self.period_s = period_s

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        if event_type != EventType.START_RUN:
            return
        controller = fl_ctx.get_engine().get_component(self.workflow_id)
        communicator = getattr(controller, "communicator", None)
        if communicator is None or not hasattr(communicator, "_task_check_period"):
            self.log_warning(fl_ctx, f"workflow {self.workflow_id!r}: task check period unchanged")
            return
        communicator._task_check_period = self.period_s
