"""``CallContext()``: the handler's view of the call it is running.

Injects the ``WorkerContext``: ``self.ctx.data`` (``user_id``, ``auth_token``, ... as the
caller sent them), ``self.ctx.call_id_stack``, ``self.ctx.request_id`` (stable across
redeliveries, for once-only effects) and ``self.ctx.remaining()`` (seconds to deadline).
"""

from __future__ import annotations

from ..extensions import DependencyProvider, WorkerContext


class CallContext(DependencyProvider):
    """Inject the current call's ``WorkerContext``."""

    def get_dependency(self, worker_ctx: WorkerContext) -> WorkerContext:
        return worker_ctx
